"""The stack the `compose.restore` tests back up and restore: a service built from `build:`
(its image made on the source engine only), a named volume, a bind inside the project directory
and one outside it (holding a symlink that points out of it), `.env`; backed up with
`compose.backup` and `images = true`; and a restore job onto the ssh peer's engine."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from davit.domain.jobs import ComposeRestoreJob
from tests.integration.compose.stack import Stack
from tests.peers.state import DockerPeer, SshPeer

COMPOSE = """\
services:
  app:
    build: ./app
    command: ["sleep", "3600"]
    environment:
      GREETING: ${GREETING}
    volumes: ["appdata:/data", "./site:/site", "UPLOADS:/uploads"]
    healthcheck:
      test: ["CMD", "sh", "-c", "test -f /uploads/readme.txt && test -f /site/index.html && test -f /blob"]
      interval: 3s
      timeout: 5s
      retries: 20
  side:
    image: BASE
    command: ["sleep", "3600"]
    volumes: ["appdata:/shared:ro"]
SIDE_HEALTH
volumes:
  appdata: {}
"""


# `side` healthy only where its container holds a flag file, which only the source's does (a
# container's own files are in no backup): restored, it turns unhealthy and verify fails
FLAGGED = """    healthcheck: {test: ["CMD", "test", "-e", "/tmp/on-source"], interval: 1s, retries: 2}"""


@dataclass
class BuiltStack:
    stack: Stack
    uploads: Path  # the bind source outside the project directory
    outside: Path  # where the symlink in uploads points (never written by a restore)
    image_id: str  # the `build:` image's ID (on the source engine only)

    @property
    def image_ref(self) -> str:
        return f"{self.stack.name}-app"


def make_built_stack(
    root: Path, source: docker.DockerClient, peer: DockerPeer, target_host: str, data_mib: int = 2, flagged: bool = False
) -> BuiltStack:
    """The stack, running on the source engine; `flagged`: `side` healthy on the source only."""
    name = f"davitrs{uuid.uuid4().hex[:8]}"
    uploads, outside = root / "srv" / "uploads", root / "outside"
    (uploads / "img").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched\n")
    (uploads / "readme.txt").write_text("sail\n")
    (uploads / "img" / "a.bin").write_bytes(os.urandom(200_000))
    os.symlink(str(outside), uploads / "escape")  # data that points out: restored as the link it is
    d = root / "src" / name
    (d / "app").mkdir(parents=True)
    (d / "site").mkdir()
    (d / "app" / "blob").write_bytes(os.urandom(1 << 20))
    (d / "app" / "Dockerfile").write_text(f"FROM {peer.image}\nCOPY blob /blob\n")
    (d / "compose.yaml").write_text(
        COMPOSE.replace("UPLOADS", str(uploads))
        .replace("BASE", peer.image)
        .replace("SIDE_HEALTH\n", FLAGGED + "\n" if flagged else "")
    )
    (d / ".env").write_text("GREETING=ahoy\n")
    (d / "site" / "index.html").write_text("<h1>davit</h1>\n")
    stack = Stack(name, d, peer.host, target_host)
    image, _ = source.images.build(path=str(d / "app"), tag=f"{name}-app", rm=True)
    stack.compose("up", "-d")
    if flagged:
        stack.compose("exec", "-T", "side", "touch", "/tmp/on-source")
    stack.compose("up", "-d", "--wait")
    fill = (
        f"mkdir -p /data/db && dd if=/dev/urandom of=/data/db/blob bs=1048576 count={data_mib} 2>/dev/null "
        "&& echo row1 > /data/db/t.txt"
    )
    stack.compose("exec", "-T", "app", "sh", "-c", fill)
    return BuiltStack(stack, uploads, outside, str(image.id))


def remove_project(host: str, project: str) -> None:
    """Every container, network and volume of `project` on the engine at `host`."""
    client = docker.DockerClient(base_url=host)
    try:
        label = f"com.docker.compose.project={project}"
        for c in client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True)
        for n in client.networks.list(filters={"label": label}):
            n.remove()
        for v in client.volumes.list(filters={"label": label}):
            v.remove(force=True)
        for v in client.volumes.list(filters={"name": project}):
            v.remove(force=True)
    finally:
        client.close()


def remove_image(host: str, image_id: str) -> None:
    client = docker.DockerClient(base_url=host)
    try:
        client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()


def remove_paths(*paths: Path) -> None:
    subprocess.run(["rm", "-rf", *map(str, paths)], check=False)


def restore_job(
    ssh_peer: SshPeer, snapshot: str, project: str, base: Path, path_map: dict[str, str], **extra: Any
) -> ComposeRestoreJob:
    return ComposeRestoreJob.model_validate(
        {
            "name": "restore",
            "kind": "compose.restore",
            "verify_timeout": 60,
            "project": project,
            "source": {"snapshot": snapshot},
            "path_map": path_map,
            "target": {
                "host": ssh_peer.host,
                "port": ssh_peer.port,
                "user": ssh_peer.user,
                "key_file": ssh_peer.key_file,
                "known_hosts": ssh_peer.known_hosts,
                "base_path": str(base),
                "helper_image": ssh_peer.image,
            },
            **extra,
        }
    )

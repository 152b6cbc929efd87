"""The compose stack the migration tests move: two services, a named volume, a bind-mounted
directory with files, an `.env` variable used in the compose file and a busybox healthcheck."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from tests.peers.state import DockerPeer, SshPeer

COMPOSE = """\
services:
  web:
    image: ${WEB_IMAGE}
    command: ["sh", "-c", "echo $$GREETING > /data/started; sleep 3600"]
    environment:
      GREETING: ${GREETING}
      DB_PASSWORD: ${DB_PASSWORD}
    volumes: ["appdata:/data", "./site:/site"]
    healthcheck:
      test: ["CMD", "sh", "-c", "test -f /site/index.html && test -f /data/started"]
      interval: 1s
      timeout: 5s
      retries: 60
    labels:
      davit.test: "true"
  worker:
    image: ${WORKER_IMAGE}
    command: ["sleep", "3600"]
    volumes: ["appdata:/shared:ro"]
volumes:
  appdata: {}
"""

# The same stack, defined across more files: the worker takes its settings from an env file,
# web extends a service in another file (which has an env file of its own), and web reads a
# config and a secret from files. All must reach the target for the project to run there.
COMPOSE_WITH_FILES = (
    COMPOSE.replace(
        """    labels:
      davit.test: "true"
""",
        """    labels:
      davit.test: "true"
    extends:
      file: common/base.yaml
      service: base
    configs: [{source: appconf, target: /etc/app.conf}]
    secrets: [apikey]
""",
    ).replace(
        """    command: ["sleep", "3600"]
""",
        """    command: ["sleep", "3600"]
    env_file: [env/worker.env, {path: env/optional.env, required: false}]
""",
    )
    + """configs:
  appconf: {file: ./conf/app.conf}
secrets:
  apikey: {file: ./secrets/api.key}
"""
)
DEFINITION_FILES = {
    "common/base.yaml": "services:\n  base:\n    env_file: base.env\n    environment: {FROM_BASE: yes}\n",
    "common/base.env": "BASE_ENV=from-base-env\n",
    "env/worker.env": "WORKER_MODE=night-shift\nWORKER_TOKEN=oar-lock-secret\n",
    "conf/app.conf": "harbour = {{project}}\n",
    "secrets/api.key": "api-key-bollard-secret\n",
}


@dataclass
class Stack:
    name: str
    dir: Path
    source_host: str
    target_host: str

    def compose(self, *args: str, host: str | None = None, cwd: Path | None = None) -> str:
        env = {**os.environ, "DOCKER_HOST": host or self.source_host}
        done = subprocess.run(
            ["docker", "compose", "-p", self.name, *args],
            cwd=cwd or self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def volume_dir(self, client: docker.DockerClient) -> Path:
        return Path(client.volumes.get(f"{self.name}_appdata").attrs["Mountpoint"])

    def states(self, client: docker.DockerClient) -> dict[str, str]:
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.name}"})
        return {c.labels["com.docker.compose.service"]: c.status for c in found}


def make_stack(root: Path, source: DockerPeer, target: SshPeer, web_image: str | None = None, with_files: bool = False) -> Stack:
    """The test stack, running on the source engine; `with_files` uses `COMPOSE_WITH_FILES`."""
    name = f"davitmig{uuid.uuid4().hex[:8]}"
    d = root / "src" / name
    (d / "site" / "assets").mkdir(parents=True)
    (d / "compose.yaml").write_text(COMPOSE_WITH_FILES if with_files else COMPOSE)
    if with_files:
        for rel, text in DEFINITION_FILES.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text.replace("{{project}}", str(d)))
        os.chmod(d / "secrets" / "api.key", 0o600)
    (d / ".env").write_text(
        f"WEB_IMAGE={web_image or source.image}\nWORKER_IMAGE={source.image}\nGREETING=ahoy\nDB_PASSWORD=hunter2-secret\n"
    )
    (d / "site" / "index.html").write_text("<h1>davit</h1>\n")
    (d / "site" / "assets" / "logo.bin").write_bytes(os.urandom(300_000))
    (d / "site" / "assets" / "notes.txt").write_text("keel winch hull\n" * 2000)
    os.chmod(d / "site" / "assets" / "notes.txt", 0o640)
    stack = Stack(name, d, source.host, target.docker_host)
    stack.compose("up", "-d", "--wait")
    stack.compose(
        "exec",
        "-T",
        "web",
        "sh",
        "-c",
        "mkdir -p /data/db && dd if=/dev/urandom of=/data/db/blob bs=1024 count=900 2>/dev/null && "
        "echo row1 > /data/db/table.txt && ln -s db/table.txt /data/current",
    )
    return stack


def cleanup(stack: Stack, base_path: Path) -> None:
    for host in (stack.source_host, stack.target_host):
        env = {**os.environ, "DOCKER_HOST": host}
        client = docker.DockerClient(base_url=host)
        try:
            label = f"com.docker.compose.project={stack.name}"
            for c in client.containers.list(all=True, filters={"label": label}):
                c.remove(force=True)
            for n in client.networks.list(filters={"label": label}):
                n.remove()
            for v in client.volumes.list(filters={"name": stack.name}):
                v.remove(force=True)
        finally:
            client.close()
        del env
    subprocess.run(["rm", "-rf", str(base_path / stack.name), str(base_path / ".davit")], check=False)


def digest(path: Path) -> dict[str, tuple[Any, ...]]:
    """Content, type, mode and owner of every entry: what byte-identical data means here."""
    out: dict[str, tuple[Any, ...]] = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(path))
        if p.is_symlink():
            out[rel] = ("l", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("d", st.st_mode & 0o7777, st.st_uid)
        else:
            out[rel] = ("f", st.st_mode & 0o7777, st.st_uid, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def clients(source: DockerPeer, target: SshPeer) -> Iterator[tuple[docker.DockerClient, docker.DockerClient]]:
    a, b = docker.DockerClient(base_url=source.host), docker.DockerClient(base_url=target.docker_host)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@contextmanager
def built_image_stack(
    tmp_path: Path,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    source: docker.DockerClient,
    compose: str,
    *,
    prefix: str,
    blob_mib: int,
    site_mib: int = 0,
    volume_mib: int = 0,
    before_cleanup: Callable[[], None] | None = None,
) -> Iterator[tuple[Stack, str]]:
    """A running stack (`compose`, named `prefix` + a random suffix) whose `app` service's image
    was built on the source engine only: the peer's test image plus `blob_mib` MiB of random
    bytes. With `site_mib`, a bind directory `site` of that many MiB (4 MiB files); with
    `volume_mib`, that many MiB written into `/data` of `app`. Yields the stack and the image's
    ID; afterwards `before_cleanup` (a test that failed early stops its daemon there), then the
    stack, the target's directory and the image on both engines go."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    d = tmp_path / "src" / name
    (d / "app").mkdir(parents=True)
    (d / "app" / "blob").write_bytes(os.urandom(blob_mib << 20))
    (d / "app" / "Dockerfile").write_text(f"FROM {docker_peer.image}\nCOPY blob /blob\n")
    if site_mib:
        (d / "site").mkdir()
        for n in range(site_mib // 4):
            (d / "site" / f"part{n}.bin").write_bytes(os.urandom(4 << 20))
    (d / "compose.yaml").write_text(compose)
    stack = Stack(name, d, docker_peer.host, ssh_peer.docker_host)
    tag = f"{name}-app"  # the name compose gives a built service's image
    try:
        image, _ = source.images.build(path=str(d / "app"), tag=tag, rm=True)
        stack.compose("up", "-d")
        if volume_mib:
            fill = f"dd if=/dev/urandom of=/data/big bs=1048576 count={volume_mib} 2>/dev/null"
            stack.compose("exec", "-T", "app", "sh", "-c", fill)
        yield stack, str(image.id)
    finally:
        if before_cleanup is not None:
            before_cleanup()
        cleanup(stack, tmp_path / "target")
        for client in clients(docker_peer, ssh_peer):
            for c in client:
                try:
                    c.images.remove(tag, force=True)
                except docker.errors.NotFound:
                    pass

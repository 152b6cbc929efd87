"""Smoke tests: the Docker Engine peer runs containers, keeps named volumes, runs Compose."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import docker
import pytest

from tests.peers.state import DockerPeer

pytestmark = pytest.mark.docker


def _run(client: docker.DockerClient, image: str, command: list[str], volume: str) -> bytes:
    """Run a container to completion with VOLUME at /data; return its output."""
    container = client.containers.create(image, command, volumes={volume: {"bind": "/data", "mode": "rw"}})
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        return bytes(container.logs())
    finally:
        container.remove(force=True)


def test_container_writes_to_named_volume(docker_peer: DockerPeer) -> None:
    client = docker.DockerClient(base_url=docker_peer.host)
    name = f"davit-smoke-{uuid.uuid4().hex[:8]}"
    volume = client.volumes.create(name)
    try:
        _run(client, docker_peer.image, ["sh", "-c", "echo hello > /data/greeting"], name)
        assert _run(client, docker_peer.image, ["cat", "/data/greeting"], name) == b"hello\n"
    finally:
        volume.remove(force=True)
        client.close()


def test_compose_up_and_down(docker_peer: DockerPeer, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(f"""\
services:
  app:
    image: {docker_peer.image}
    command: ["sh", "-c", "echo up > /data/state && sleep 600"]
    volumes: ["appdata:/data"]
volumes:
  appdata: {{}}
""")
    project = f"davitsmoke{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DOCKER_HOST": docker_peer.host}

    def compose(*args: str) -> str:
        return subprocess.run(
            ["docker", "compose", "-p", project, *args],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    try:
        compose("up", "-d", "--wait")
        ps = [json.loads(line) for line in compose("ps", "--format", "json").splitlines() if line]
        assert [(c["Service"], c["State"]) for c in ps] == [("app", "running")]
        assert compose("exec", "-T", "app", "cat", "/data/state") == "up\n"
    finally:
        compose("down", "-v", "--timeout", "1")
    client = docker.DockerClient(base_url=docker_peer.host)
    try:
        assert not client.volumes.list(filters={"name": f"{project}_appdata"})
    finally:
        client.close()

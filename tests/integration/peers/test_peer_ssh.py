"""Smoke tests: the second host answers over SSH with host-key checking, on its own engine."""

from __future__ import annotations

import asyncio
import uuid

import asyncssh
import docker
import pytest

from tests.peers.state import SshPeer

pytestmark = pytest.mark.ssh


async def _ssh_run(peer: SshPeer, command: str, known_hosts: object) -> str:
    async with asyncssh.connect(
        peer.host, peer.port, username=peer.user, client_keys=[peer.key_file], known_hosts=known_hosts, config=[]
    ) as conn:
        result = await conn.run(command, check=True, timeout=60)
        return str(result.stdout)


def test_ssh_lists_the_second_engines_volumes(ssh_peer: SshPeer) -> None:
    name = f"davit-smoke-{uuid.uuid4().hex[:8]}"
    engine2 = docker.DockerClient(base_url=ssh_peer.docker_host)
    engine2.volumes.create(name)
    try:
        out = asyncio.run(_ssh_run(ssh_peer, "docker volume ls --format '{{.Name}}'", ssh_peer.known_hosts))
        assert name in out.split()
        env = asyncio.run(_ssh_run(ssh_peer, "echo $DOCKER_HOST", ssh_peer.known_hosts))
        assert env.strip() == ssh_peer.docker_host
        images = asyncio.run(_ssh_run(ssh_peer, "docker image ls --format '{{.Repository}}:{{.Tag}}'", ssh_peer.known_hosts))
        assert ssh_peer.image in images.split()
    finally:
        engine2.volumes.get(name).remove(force=True)
        engine2.close()


def test_ssh_rejects_an_unknown_host_key(ssh_peer: SshPeer) -> None:
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    wrong = asyncssh.import_known_hosts(f"[{ssh_peer.host}]:{ssh_peer.port} {other_key}")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(_ssh_run(ssh_peer, "true", wrong))

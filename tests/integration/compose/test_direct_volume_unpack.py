"""A volume unpacked by the target host's tar straight into its mountpoint (`target.direct_mountpoints`),
against the real sshd and the target's engine: only a `local` volume without options whose
directory the SSH user's shell and a container see as the same is chosen; what is unpacked
there is what a container of the stack then sees, owners, modes and links included, and a
repeat on unchanged data writes nothing (its walker is the host's)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import docker
import pytest

from davit.adapters.compose import target as tgt
from davit.adapters.compose import tarindex
from davit.adapters.compose.pipeline import Moved, move_item
from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import SshAddress, connect
from tests.integration.compose.test_pipeline_repeat import settled_tree
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def address(peer: SshPeer) -> SshAddress:
    return SshAddress(peer.host, peer.port, peer.user, peer.key_file, peer.known_hosts)


@pytest.fixture
def engine(ssh_peer: SshPeer) -> docker.DockerClient:
    client = docker.DockerClient(base_url=ssh_peer.docker_host)
    yield client
    client.close()


@pytest.fixture
def volumes(engine: docker.DockerClient) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    plain = engine.volumes.create(f"c-mig2-direct-{tag}").name
    mounted = engine.volumes.create(f"c-mig2-tmpfs-{tag}", driver_opts={"type": "tmpfs", "device": "tmpfs"}).name
    yield [plain, mounted]
    for name in (plain, mounted):
        engine.volumes.get(name).remove(force=True)


def in_container(engine: docker.DockerClient, image: str, volume: str, script: str) -> str:
    out = engine.containers.run(image, ["sh", "-c", script], volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True)
    return out.decode() if isinstance(out, bytes) else str(out)


def test_only_a_plain_local_volume_seen_alike_from_the_shell_and_a_container_is_unpacked_directly(
    ssh_peer: SshPeer, engine: docker.DockerClient, volumes: list[str]
) -> None:
    plain, mounted = volumes
    items = [Item("v0", "volume", "/src0", plain), Item("v1", "volume", "/src1", mounted)]
    with connect(address(ssh_peer)) as host:
        direct = tgt.direct_mountpoints(host, items, ssh_peer.image)
    assert direct == {plain: engine.volumes.get(plain).attrs["Mountpoint"]}


def test_what_is_unpacked_into_the_mountpoint_is_what_a_container_sees_and_a_repeat_writes_nothing(
    ssh_peer: SshPeer, engine: docker.DockerClient, volumes: list[str], tmp_path: Path
) -> None:
    plain = volumes[0]
    source = settled_tree(tmp_path / "source")
    owned = source / "deep" / "owned.txt"
    owned.write_text("someone else's")
    os.chown(owned, 1234, 4321)
    os.chmod(owned, 0o640)
    os.utime(owned, (1_600_000_000, 1_600_000_000))
    time.sleep(tarindex.RACY_NS / 1e9 + 0.2)  # settled again, so a repeat may trust its fingerprint
    layout = tgt.TargetLayout(str(tmp_path / "target"), "proj")
    item = Item("volume-0", "volume", str(source), plain)

    def move() -> Moved:
        with connect(address(ssh_peer)) as host:
            mountpoint = tgt.direct_mountpoints(host, [item], ssh_peer.image)[plain]
            return move_item(
                host,
                layout.store,
                item,
                tgt.direct_unpacker(mountpoint, plain),
                1,
                tgt.present_chunks(host, layout),
                set(),
                lambda _n, _b: None,
                lambda: None,
                tgt.direct_walker(mountpoint),
            )

    first = move()
    assert first.unpacked
    listing = "cd /v && find . -exec stat -c '%n %u:%g %a %s %Y %N' {} + | sort"
    seen = in_container(engine, ssh_peer.image, plain, listing)
    assert "./deep/owned.txt 1234:4321 640 14 1600000000" in seen
    assert "'./link' -> 'deep/notes.txt'" in seen
    sums = in_container(engine, ssh_peer.image, plain, "cd /v && find . -type f -exec sha256sum {} + | sort -k 2")
    with connect(address(ssh_peer)) as host:
        local = host.run(f"cd {source} && find . -type f -exec sha256sum {{}} + | sort -k 2").stdout
    assert sums == local
    again = move()
    assert not again.unpacked and again.sent_chunks == 0

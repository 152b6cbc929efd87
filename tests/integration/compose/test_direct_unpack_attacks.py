"""A volume unpacked by the target host's GNU tar as root straight into its mountpoint
(`target.direct_mountpoints`) against a container that has the volume mounted and swaps, while
tar runs, each directory tar just made for a symlink to a host path: GNU tar resolves a member's
parent components again at each open and follows such a symlink, so the data would land on the
host outside the volume (guarantee 13). Through the helper container the same symlink resolved
inside the helper's own file system. Real sshd (the target host) and the target's engine."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from davit.adapters.compose import target as tgt
from davit.adapters.compose.pipeline import move_item
from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import RemoteCommandFailed, SshAddress, connect
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]

BIG = 64 << 20  # written long enough for the racer to act while tar is at it


def address(peer: SshPeer) -> SshAddress:
    return SshAddress(peer.host, peer.port, peer.user, peer.key_file, peer.known_hosts)


@pytest.fixture
def engine(ssh_peer: SshPeer) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=ssh_peer.docker_host)
    yield client
    client.close()


@pytest.fixture
def volume(engine: docker.DockerClient) -> Iterator[str]:
    name = engine.volumes.create(f"atk-mig-direct-{uuid.uuid4().hex[:8]}").name
    yield name
    for container in engine.containers.list(all=True, filters={"volume": name}):
        container.remove(force=True)
    engine.volumes.get(name).remove(force=True)


def racer(engine: docker.DockerClient, image: str, volume: str, outside: Path) -> docker.models.containers.Container:
    """A container of the stack (or any other) with the volume mounted: once tar writes `a/0big`,
    the directory `a` is moved aside and a symlink to `outside` (a path on the target host) put
    in its place, before tar opens `a/zz`."""
    loop = f"while [ ! -e /v/a/0big ]; do :; done; mv /v/a /v/a.moved && ln -s {outside} /v/a; sleep 600"
    return engine.containers.run(image, ["sh", "-c", loop], volumes={volume: {"bind": "/v", "mode": "rw"}}, detach=True,
                                 name=f"atk-mig-racer-{uuid.uuid4().hex[:8]}")  # fmt: skip


def source_tree(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "a" / "0big").write_bytes(os.urandom(BIG))
    (root / "a" / "zz").write_text("through the symlink\n")
    return root


def test_a_volume_another_container_has_mounted_is_not_unpacked_by_the_hosts_tar(
    ssh_peer: SshPeer, engine: docker.DockerClient, volume: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    racer(engine, ssh_peer.image, volume, outside)
    item = Item("volume-0", "volume", str(source_tree(tmp_path / "source")), volume)
    layout = tgt.TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host:
        direct = tgt.direct_mountpoints(host, [item], ssh_peer.image)
        # what `ComposeMigrateWork._unpacker` picks
        if mountpoint := direct.get(volume):
            unpack, walker = tgt.direct_unpacker(mountpoint, volume), tgt.direct_walker(mountpoint)
        else:
            unpack, walker = tgt.volume_unpacker(item, ssh_peer.image), tgt.walker_for(item, ssh_peer.image)
        try:
            move_item(host, layout.store, item, unpack, 1, tgt.present_chunks(host, layout), set(),
                      lambda _n, _b: None, lambda: None, walker)  # fmt: skip
        except RemoteCommandFailed:
            pass  # the racer made tar fail: what matters is where it wrote
    assert sorted(p.name for p in outside.iterdir()) == [], "the host's tar wrote through the racer's symlink"
    assert direct == {}, "a volume a container has mounted keeps the helper"


def test_a_container_mounting_the_volume_after_the_probe_makes_the_direct_unpack_refuse(
    ssh_peer: SshPeer, engine: docker.DockerClient, volume: str, tmp_path: Path
) -> None:
    item = Item("volume-0", "volume", str(source_tree(tmp_path / "source")), volume)
    layout = tgt.TargetLayout(str(tmp_path / "target"), "proj")
    outside = tmp_path / "outside"
    outside.mkdir()
    with connect(address(ssh_peer)) as host:
        mountpoint = tgt.direct_mountpoints(host, [item], ssh_peer.image)[volume]  # nobody mounts it yet
        engine.containers.create(ssh_peer.image, ["true"], volumes={volume: {"bind": "/v", "mode": "rw"}},
                                 name=f"atk-mig-late-{uuid.uuid4().hex[:8]}")  # fmt: skip
        with pytest.raises(RemoteCommandFailed) as failed:
            move_item(host, layout.store, item, tgt.direct_unpacker(mountpoint, volume), 1,
                      tgt.present_chunks(host, layout), set(), lambda _n, _b: None, lambda: None,
                      tgt.direct_walker(mountpoint))  # fmt: skip
    assert f"volume {volume} is mounted by a container" in str(failed.value)
    listing = engine.containers.run(
        ssh_peer.image, ["ls", "-A", "/v"], volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True
    )
    assert listing == b"", "nothing was unpacked"


def test_symlinks_a_removed_container_left_in_the_volume_are_replaced_not_followed(
    ssh_peer: SshPeer, engine: docker.DockerClient, volume: str, tmp_path: Path
) -> None:
    # what a container of the stack (gone since) or an earlier partial pass left: the source's
    # directory `a`, its file `a/zz` and a file `top` each a symlink to a host path outside
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_text("mine\n")
    plant = f"ln -s {outside / 'dir'} /v/a && ln -s {outside / 'file'} /v/top"
    engine.containers.run(ssh_peer.image, ["sh", "-c", plant], volumes={volume: {"bind": "/v", "mode": "rw"}}, remove=True)
    source = tmp_path / "source"
    (source / "a").mkdir(parents=True)
    (source / "a" / "zz").write_text("inside\n")
    (source / "top").write_text("top\n")
    item = Item("volume-0", "volume", str(source), volume)
    layout = tgt.TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host:
        mountpoint = tgt.direct_mountpoints(host, [item], ssh_peer.image)[volume]  # nobody mounts it now
        move_item(host, layout.store, item, tgt.direct_unpacker(mountpoint, volume), 1, tgt.present_chunks(host, layout),
                  set(), lambda _n, _b: None, lambda: None, tgt.direct_walker(mountpoint))  # fmt: skip
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == ["dir", "file"]
    assert (outside / "file").read_text() == "mine\n"
    seen = engine.containers.run(ssh_peer.image, ["sh", "-c", "cd /v && ls -l && cat a/zz top"],
                                 volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True).decode()  # fmt: skip
    assert "->" not in seen and seen.endswith("inside\ntop\n")

"""A bind path was unpacked on the target by the host's GNU tar as root (`target.unpacker_for`):
a container (or a local user) writing in that directory while tar runs moves aside a directory
tar just made and puts a symlink to a host path in its place; GNU tar resolves a member's parent
directories again at each open, follows it, and writes outside the bind (guarantee 13).

Fixed by unpacking bind data through a helper container with the directory mounted
(`target.bind_unpacker`): the swapped symlink resolves in the helper's own file system."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import docker
import pytest

from davit.adapters.compose import target as tgt
from davit.adapters.compose.pipeline import move_item
from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import RemoteCommandFailed, connect
from tests.integration.compose.test_direct_unpack_attacks import BIG, address
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def test_a_symlink_a_container_swaps_into_a_bind_directory_during_the_unpack_is_not_followed(
    ssh_peer: SshPeer, tmp_path: Path
) -> None:
    engine = docker.DockerClient(base_url=ssh_peer.docker_host)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "data"
    dest.mkdir()
    loop = f"while [ ! -e /v/a/0big ]; do :; done; mv /v/a /v/a.moved && ln -s {outside} /v/a; sleep 600"
    racer = engine.containers.run(ssh_peer.image, ["sh", "-c", loop], volumes={str(dest): {"bind": "/v", "mode": "rw"}},
                                  detach=True, name=f"atk-mig-bind-racer-{uuid.uuid4().hex[:8]}")  # fmt: skip
    try:
        source = tmp_path / "source"
        (source / "a").mkdir(parents=True)
        (source / "a" / "0big").write_bytes(os.urandom(BIG))
        (source / "a" / "zz").write_text("through the symlink\n")
        item = Item("bind-0", "bind", str(source), str(dest))
        layout = tgt.TargetLayout(str(tmp_path / "target"), "proj")
        with connect(address(ssh_peer)) as host:
            try:
                move_item(host, layout.store, item, tgt.unpacker_for(host, item, ssh_peer.image, "proj"), 1,
                          tgt.present_chunks(host, layout), set(), lambda _n, _b: None, lambda: None,
                          tgt.walker_for(item, ssh_peer.image))  # fmt: skip
            except RemoteCommandFailed:
                pass  # what matters is where it wrote
        assert sorted(p.name for p in outside.iterdir()) == [], "the host's tar wrote through the racer's symlink"
    finally:
        racer.remove(force=True)
        engine.close()

"""`RemoteHost.run` against the sshd peer: a command given empty input sees its stdin end.

Regression: asyncssh writes input and EOF only for non-empty input, so `run(..., input=b"")`
left the remote command's stdin open: `prune_store` with no chunk to keep (`cat` of an empty
list) hung a second migration of an unchanged stack at finalize, for ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.compose.target import TargetLayout, prune_store
from davit.adapters.ssh.remote import SshAddress, connect
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def address(ssh_peer: SshPeer) -> SshAddress:
    return SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)


def test_a_command_reading_empty_input_ends(ssh_peer: SshPeer) -> None:
    with connect(address(ssh_peer)) as host:
        result = host.run("wc -c", input=b"", timeout=20)
        assert result.status == 0 and result.stdout.split() == ["0"]
        assert host.run("wc -c", input=b"abc", timeout=20).stdout.split() == ["3"]


def test_pruning_a_transfer_cache_to_no_chunk_at_all_ends_and_empties_it(ssh_peer: SshPeer, tmp_path: Path) -> None:
    layout = TargetLayout(str(tmp_path), "shop")
    chunks = tmp_path / ".davit" / "shop" / "chunks"
    chunks.mkdir(parents=True)
    (chunks / f"{'a' * 64}.zst").write_bytes(b"x")
    with connect(address(ssh_peer)) as host:
        assert prune_store(host, layout, set()) == 1
    assert list(chunks.iterdir()) == []

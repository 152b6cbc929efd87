"""A repeated pass of unchanged data from a source reached over SSH reads nothing of it there:
the item's fingerprint is taken on the source host (`sshfingerprint.py`, GNU find's metadata),
and its chunk list recorded in the target's store is unpacked as it is; a file changed in any
way, even with its size and mtime put back, is read and sent again; files written just before
a pass get no fingerprint. The sshd peer is both the source host (its files are this
machine's, read only through its session here) and the target."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.compose import pipeline, tarindex
from davit.adapters.compose.pipeline import Moved, move_item, tar_command
from davit.adapters.compose.source import Item
from davit.adapters.compose.sshfingerprint import remote_fingerprint
from davit.adapters.compose.sshsource import SshSource, SshSpawn
from davit.adapters.compose.target import TargetLayout, present_chunks, unpacker_for
from davit.adapters.ssh.remote import RemoteHost, connect
from davit.adapters.ssh.threaded import ThreadedHost, connect_threaded
from tests.integration.compose.stack import digest
from tests.integration.compose.test_pipeline_repeat import ReadingForbidden, address, settled_tree
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def move(host: RemoteHost, source_host: ThreadedHost, peer: SshPeer, layout: TargetLayout, source: Path, dest: Path) -> Moved:
    item = Item("bind-0", "bind", str(source), str(dest))
    return move_item(
        host,
        layout.store,
        item,
        unpacker_for(host, item, peer.image, "proj"),
        1,
        present_chunks(host, layout),
        set(),
        lambda _n, _b: None,
        lambda: None,
        spawn=SshSpawn(SshSource(source_host, None)),
    )


@pytest.fixture
def no_local_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: Any) -> None:
        raise AssertionError("the source's files were looked at on this host")

    monkeypatch.setattr(tarindex, "fingerprint", forbidden)


def test_a_second_pass_from_an_ssh_source_of_unchanged_files_reads_nothing_there(
    ssh_peer: SshPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_local_reads: None
) -> None:
    source = settled_tree(tmp_path / "source")
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host, connect_threaded(address(ssh_peer)) as src:
        first = move(host, src, ssh_peer, layout, source, tmp_path / "target" / "one")
        assert first.sent_chunks >= 1
        monkeypatch.setattr(pipeline, "_Reader", ReadingForbidden)
        again = move(host, src, ssh_peer, layout, source, tmp_path / "target" / "two")
    assert again.ids == first.ids and again.plain_bytes == first.plain_bytes
    assert again.sent_chunks == 0
    assert digest(tmp_path / "target" / "two") == digest(source)


def test_a_file_changed_on_an_ssh_source_with_its_size_and_mtime_put_back_is_read_and_sent_again(
    ssh_peer: SshPeer, tmp_path: Path, no_local_reads: None
) -> None:
    source = settled_tree(tmp_path / "source")
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host, connect_threaded(address(ssh_peer)) as src:
        move(host, src, ssh_peer, layout, source, tmp_path / "target" / "one")
        changed = source / "deep" / "random.bin"
        before = changed.stat()
        changed.write_bytes(os.urandom(before.st_size))
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the ctime tells
        again = move(host, src, ssh_peer, layout, source, tmp_path / "target" / "two")
    assert again.sent_chunks >= 1
    assert digest(tmp_path / "target" / "two") == digest(source)


def test_the_fingerprint_on_an_ssh_source_follows_metadata_and_is_refused_for_fresh_files_and_missing_paths(
    ssh_peer: SshPeer, tmp_path: Path
) -> None:
    settled = settled_tree(tmp_path / "settled")
    fresh = tmp_path / "fresh"
    with connect_threaded(address(ssh_peer)) as src:

        def key(path: Path, is_file: bool = False) -> str | None:
            item = Item("bind-0", "bind", str(path), "/elsewhere", is_file=is_file)
            return remote_fingerprint(src, item, tar_command(item))

        first = key(settled)
        assert first is not None and key(settled) == first  # the same metadata, the same key
        assert key(settled / "zeros.img", is_file=True) not in (None, first)
        fresh.mkdir()
        (fresh / "new.txt").write_text("written a moment ago")
        assert key(fresh) is None
        assert key(tmp_path / "missing") is None
        os.chmod(settled / "deep" / "notes.txt", 0o600)
        assert key(settled) is None  # its ctime moved just now: too fresh to trust
        time.sleep(tarindex.RACY_NS / 1e9 + 0.2)
        assert key(settled) not in (None, first)  # settled again: a mode changed, another key

"""A repeated migration of unchanged data against the real sshd: the second pass does not read
the source (its chunk list, recorded in the target's store, is unpacked as it is), while a
file changed in any way, even with its size and mtime put back, is read and sent again; files
written just before a pass are never recorded; a list cut short is never used."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.compose import pipeline, tarindex
from davit.adapters.compose.pipeline import Moved, move_item, tar_command
from davit.adapters.compose.source import Item
from davit.adapters.compose.target import TargetLayout, present_chunks, unpacker_for
from davit.adapters.ssh.remote import RemoteHost, SshAddress, connect
from tests.integration.compose.stack import digest
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def address(peer: SshPeer) -> SshAddress:
    return SshAddress(peer.host, peer.port, peer.user, peer.key_file, peer.known_hosts)


def settled_tree(root: Path) -> Path:
    """A small tree whose files were last changed longer ago than the racy window."""
    (root / "deep").mkdir(parents=True)
    (root / "zeros.img").write_bytes(b"\0" * (9 << 20))
    (root / "deep" / "random.bin").write_bytes(os.urandom(5 << 20))
    (root / "deep" / "notes.txt").write_text("davit " * 10_000)
    os.symlink("deep/notes.txt", root / "link")
    time.sleep(tarindex.RACY_NS / 1e9 + 0.2)
    return root


def move(host: RemoteHost, peer: SshPeer, layout: TargetLayout, source: Path, dest: Path) -> Moved:
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
    )


class ReadingForbidden(pipeline._Reader):
    def __init__(self, *args: Any) -> None:
        raise AssertionError("the source was read although its chunk list was recorded")


def test_a_second_move_of_unchanged_files_unpacks_the_recorded_chunks_without_reading_the_source(
    ssh_peer: SshPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = settled_tree(tmp_path / "source")
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host:
        first = move(host, ssh_peer, layout, source, tmp_path / "target" / "one")
        monkeypatch.setattr(pipeline, "_Reader", ReadingForbidden)
        again = move(host, ssh_peer, layout, source, tmp_path / "target" / "two")
    assert again.ids == first.ids and again.sizes == first.sizes and again.plain_bytes == first.plain_bytes
    assert again.sent_chunks == 0
    assert digest(tmp_path / "target" / "two") == digest(source)


def test_a_file_changed_with_its_size_and_mtime_put_back_is_read_and_sent_again(ssh_peer: SshPeer, tmp_path: Path) -> None:
    source = settled_tree(tmp_path / "source")
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host:
        move(host, ssh_peer, layout, source, tmp_path / "target" / "one")
        changed = source / "deep" / "random.bin"
        before = changed.stat()
        changed.write_bytes(os.urandom(before.st_size))
        os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the ctime tells
        again = move(host, ssh_peer, layout, source, tmp_path / "target" / "two")
    assert again.sent_chunks >= 1
    assert digest(tmp_path / "target" / "two") == digest(source)


def test_files_written_just_before_a_move_leave_no_chunk_list(ssh_peer: SshPeer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "fresh.txt").write_text("written a moment ago")
    item = Item("bind-0", "bind", str(source), str(tmp_path / "target" / "one"))
    assert tarindex.fingerprint(item, tar_command(item)) is None
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host:
        move(host, ssh_peer, layout, source, tmp_path / "target" / "one")
    assert not (Path(layout.store) / tarindex.TARS).exists()


def test_a_chunk_list_cut_short_is_not_used(ssh_peer: SshPeer, tmp_path: Path) -> None:
    source = settled_tree(tmp_path / "source")
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    item = Item("bind-0", "bind", str(source), str(tmp_path / "target" / "one"))
    key = tarindex.fingerprint(item, tar_command(item))
    assert key is not None
    with connect(address(ssh_peer)) as host:
        first = move(host, ssh_peer, layout, source, tmp_path / "target" / "one")
        listed = Path(layout.store) / tarindex.TARS / key
        lines = listed.read_text().splitlines()
        assert tarindex.lookup(host, layout.store, key) == tarindex.Listed(first.ids, first.plain_bytes)
        listed.write_text("\n".join(lines[:-2]) + "\n")  # the last chunk and the count line lost
        assert tarindex.lookup(host, layout.store, key) is None
        again = move(host, ssh_peer, layout, source, tmp_path / "target" / "two")
    assert again.ids == first.ids
    assert digest(tmp_path / "target" / "two") == digest(source)


@pytest.mark.parametrize(
    "first_line", ["bytes ²", "bytes ٣", "bytes -1", "bytes 1e3"], ids=["superscript", "arabic-indic", "negative", "exponent"]
)
def test_a_chunk_list_whose_length_is_not_plain_ascii_digits_is_not_used(
    ssh_peer: SshPeer, tmp_path: Path, first_line: str
) -> None:
    """A list on the target is a cache anyone with the target's store may have written over:
    one whose length line `str.isdigit` takes (a superscript two) but `int` refuses, or reads
    as another number, is ignored like one cut short. Before: ValueError out of the migration."""
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    key = "0" * 64
    listed = Path(layout.store) / tarindex.TARS / key
    listed.parent.mkdir(parents=True)
    listed.write_text(f"{first_line}\n{'a' * 64}\nend 1\n")
    with connect(address(ssh_peer)) as host:
        assert tarindex.lookup(host, layout.store, key) is None

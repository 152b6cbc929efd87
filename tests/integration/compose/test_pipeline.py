"""The migration's data pipeline against the real sshd: a directory moved to the target is
identical there; a chunk met twice goes over the wire once; a second move of the same data
sends nothing; a chunk cut short is never listed as present in the target's store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from davit.adapters.compose.pipeline import move_item, store_command
from davit.adapters.compose.source import Item
from davit.adapters.compose.target import TargetLayout, present_chunks, unpacker_for
from davit.adapters.ssh.remote import SshAddress, connect
from tests.integration.compose.stack import digest
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def address(peer: SshPeer) -> SshAddress:
    return SshAddress(peer.host, peer.port, peer.user, peer.key_file, peer.known_hosts)


def tree(root: Path) -> Path:
    (root / "deep" / "er").mkdir(parents=True)
    (root / "zeros.img").write_bytes(b"\0" * (13 << 20))  # the same 4 MiB chunk three times
    (root / "deep" / "er" / "random.bin").write_bytes(os.urandom(6 << 20))
    (root / "deep" / "notes.txt").write_text("davit " * 10_000)
    os.chmod(root / "deep" / "notes.txt", 0o604)
    os.symlink("deep/notes.txt", root / "link")
    return root


def test_a_moved_directory_is_identical_on_the_target_and_a_second_move_sends_nothing(ssh_peer: SshPeer, tmp_path: Path) -> None:
    source = tree(tmp_path / "source")
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    acknowledged: list[int] = []
    with connect(address(ssh_peer)) as host:
        first = Item("bind-0", "bind", str(source), str(tmp_path / "target" / "one"))
        present = present_chunks(host, layout)
        sent: set[str] = set()
        moved = move_item(
            host,
            layout.store,
            first,
            unpacker_for(host, first, ssh_peer.image, "proj"),
            1,
            present,
            sent,
            lambda _n, size: acknowledged.append(size),
            lambda: None,
        )
        assert moved.sent_chunks == len(set(moved.ids)) < len(moved.ids), "the repeated zero chunk went once"
        assert sum(acknowledged) == moved.sent_bytes == sum(present_chunks(host, layout).values())

        second = Item("bind-0", "bind", str(source), str(tmp_path / "target" / "two"))
        again = move_item(
            host,
            layout.store,
            second,
            unpacker_for(host, second, ssh_peer.image, "proj"),
            1,
            present_chunks(host, layout),
            set(),
            lambda _n, _b: None,
            lambda: None,
        )
    assert again.ids == moved.ids and again.sent_chunks == 0 and again.sent_bytes == 0
    assert digest(tmp_path / "target" / "one") == digest(source) == digest(tmp_path / "target" / "two")


def test_a_chunk_cut_short_by_a_lost_sender_is_not_listed_as_present(ssh_peer: SshPeer, tmp_path: Path) -> None:
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    with connect(address(ssh_peer)) as host:
        present_chunks(host, layout)
        # the header promises 1000 bytes; the sender is gone after 10 (stdin closes)
        result = host.run(store_command(layout.store), input=b"abc 1000\n" + b"x" * 10, check=False)
        assert result.status != 0 and result.stdout == ""
        assert present_chunks(host, layout) == {}
        whole = host.run(store_command(layout.store), input=b"abc 1000\n" + b"x" * 1000 + b"END 0\n")
        assert whole.stdout == "abc\n" and present_chunks(host, layout) == {"abc": 1000}


def test_chunks_of_a_stream_cut_before_their_batch_was_filed_are_neither_acknowledged_nor_listed(
    ssh_peer: SshPeer, tmp_path: Path
) -> None:
    # whole chunks, then the sender is gone (no END): the batch was never fsynced and filed, so
    # none is acknowledged nor listed, and listing the store drops what was written of them
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    chunks = [os.urandom(1000) for _ in range(3)]
    stream = b"".join(f"c{i} {len(c)}\n".encode() + c for i, c in enumerate(chunks)) + b"c3 1000\n" + b"x" * 10
    with connect(address(ssh_peer)) as host:
        present_chunks(host, layout)
        result = host.run(store_command(layout.store), input=stream, check=False)
        assert result.status != 0 and result.stdout == ""
        incoming = Path(layout.store) / "incoming"
        assert sorted(p.name for p in incoming.glob("*/*")) == ["c0.zst", "c1.zst", "c2.zst", "c3.zst"]
        assert present_chunks(host, layout) == {} and not any(incoming.iterdir())


@pytest.mark.parametrize("where", ["direct-capable disk", "busybox dd", "tmpfs"])
def test_the_store_writer_files_every_chunk_whole_whether_or_not_it_can_write_past_the_page_cache(
    ssh_peer: SshPeer, tmp_path: Path, where: str
) -> None:
    # chunk lengths that are and are not multiples of the 1 MiB block the direct path writes in
    chunks = [os.urandom(n) for n in (1, 4096, 1 << 20, (1 << 20) + 7, 3_000_001)]
    names = [f"c{i}" for i in range(len(chunks))]
    stream = b"".join(f"{name} {len(c)}\n".encode() + c for name, c in zip(names, chunks, strict=True)) + b"END 0\n"
    store = Path("/dev/shm") / f"davit-store-{tmp_path.name}" if where == "tmpfs" else tmp_path / "store"
    store.mkdir(parents=True)
    prefix = ""
    if where == "busybox dd":
        (tmp_path / "bin").mkdir()
        os.symlink("/bin/busybox", tmp_path / "bin" / "dd")
        prefix = f"PATH={tmp_path / 'bin'}:$PATH; "
    try:
        with connect(address(ssh_peer)) as host:
            result = host.run(prefix + store_command(str(store)), input=stream)
        assert result.stdout.split() == names
        assert [(store / "chunks" / f"{name}.zst").read_bytes() for name in names] == chunks
        assert sorted(p.name for p in (store / "chunks").iterdir()) == sorted(f"{n}.zst" for n in names)
    finally:
        if where == "tmpfs":
            shutil.rmtree(store, ignore_errors=True)

"""The unpacker's `+` lines (`pipeline.unpack_command`): several chunks this run wrote streamed by
one `cat`, in order, mixed with chunks checked one by one; the count still proves the list
whole, and a missing chunk in a batch fails the unpack. Run by this host's sh, zstd and
sha256sum, which the target's shell runs the same script with."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import zstandard

from davit.adapters.compose.pipeline import CAT_BATCH, _name_lines, unpack_command


def chunks(tmp_path: Path, count: int) -> tuple[Path, list[str], bytes]:
    store = tmp_path / "chunks"
    store.mkdir()
    names, whole = [], b""
    for n in range(count):
        plain = f"chunk {n}\n".encode() * (n + 1)
        name = hashlib.sha256(plain).hexdigest()
        (store / f"{name}.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
        names.append(name)
        whole += plain
    return store, names, whole


def unpack(store: Path, out: Path, lines: bytes) -> subprocess.CompletedProcess[bytes]:
    cmd = unpack_command(str(store), f"cat > {out}")
    return subprocess.run(["sh", "-c", cmd], input=lines, capture_output=True, timeout=60)


def test_batched_and_checked_chunks_arrive_whole_and_in_order(tmp_path: Path) -> None:
    count = CAT_BATCH * 2 + 3
    store, names, whole = chunks(tmp_path, count)
    sent = set(names) - {names[5], names[CAT_BATCH + 1]}  # two found in the store: checked
    lines = _name_lines(names, sent)
    assert lines.count(b"\n+ ") + lines.startswith(b"+ ") >= 3  # batches were made
    assert b" check\n" in lines
    out = tmp_path / "out"
    done = unpack(store, out, lines + f"END {count} id\n".encode())
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == whole


def test_a_batch_naming_a_missing_chunk_fails(tmp_path: Path) -> None:
    store, names, _ = chunks(tmp_path, 5)
    (store / f"{names[2]}.zst").unlink()
    done = unpack(store, tmp_path / "out", _name_lines(names, set(names)) + b"END 5 id\n")
    assert done.returncode != 0
    assert b"unreadable" in done.stderr


def test_a_count_that_differs_from_the_batched_names_fails(tmp_path: Path) -> None:
    store, names, _ = chunks(tmp_path, 5)
    done = unpack(store, tmp_path / "out", _name_lines(names, set(names)) + b"END 4 id\n")
    assert done.returncode != 0
    assert b"cut short" in done.stderr


def test_a_batch_stops_at_a_missing_chunk_and_streams_nothing_after_it(tmp_path: Path) -> None:
    """`cat a b c` with b gone printed a and c and failed only at its end: the chunks after the
    hole went into the unpacker as if they followed a (tar reading another chunk's bytes where
    b's were). A batch's chunks are each checked before its one `cat`: none of it is streamed."""
    store, names, _ = chunks(tmp_path, 5)
    (store / f"{names[2]}.zst").unlink()
    out = tmp_path / "out"
    done = unpack(store, out, _name_lines(names, set(names)) + b"END 5 id\n")
    assert done.returncode != 0
    assert names[2].encode() in done.stderr and b"unreadable" in done.stderr
    assert b"chunk 3" not in out.read_bytes() and b"chunk 4" not in out.read_bytes()


def test_a_symlink_named_like_a_chunk_this_run_sent_is_not_unpacked(tmp_path: Path) -> None:
    """A chunk this run wrote is trusted unread (`+` lines, single names): a symlink put in its
    place, here to another chunk of the store, streamed that chunk's bytes in its stead and the
    unpack ended well. The unpacker takes only a regular file, never a symlink."""
    for batched in (True, False):
        base = tmp_path / str(batched)
        base.mkdir()
        store, names, _ = chunks(base, 4 if batched else 1)
        other = hashlib.sha256(b"other").hexdigest()
        (store / f"{other}.zst").write_bytes(zstandard.ZstdCompressor().compress(b"planted bytes\n"))
        victim = store / f"{names[-1]}.zst"
        victim.unlink()
        victim.symlink_to(store / f"{other}.zst")
        out = base / "out"
        lines = _name_lines(names, set(names))
        assert lines.startswith(b"+ ") == batched
        done = unpack(store, out, lines + f"END {len(names)} id\n".encode())
        assert done.returncode != 0, f"batched={batched}"
        assert names[-1].encode() in done.stderr
        assert not out.exists() or b"planted" not in out.read_bytes()

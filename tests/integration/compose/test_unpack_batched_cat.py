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

"""The store's small-file I/O without a buffered file object: a pack's gathered blobs go out
in one `writev` per hand-off (every byte, in order, whatever a call wrote), and a small file
is read with its raw descriptor to its end (a file that grew since the walk too), never past
its cap."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.files.backup import _read_to_end
from davit.adapters.repository.packs import _IOV_MAX, write_all


def _write_blobs(path: Path, blobs: list[bytes | memoryview], **kwargs: Any) -> bytes:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, blobs, **kwargs)
    finally:
        os.close(fd)
    return path.read_bytes()


def test_a_pack_whose_writes_end_mid_blob_still_holds_every_blob_in_order(tmp_path: Path) -> None:
    blobs: list[bytes | memoryview] = [os.urandom(n) for n in (1, 7, 0, 13, 64, 3)]
    blobs.append(memoryview(os.urandom(40))[5:30])

    def at_most_5_bytes(fd: int, buffers: Sequence[Any]) -> int:  # a disk that takes little at a time
        return os.writev(fd, [bytes(buffers[0])[:5]])

    assert _write_blobs(tmp_path / "p", blobs, writev=at_most_5_bytes) == b"".join(bytes(b) for b in blobs)


def test_more_blobs_than_one_writev_takes_are_all_written(tmp_path: Path) -> None:
    blobs: list[bytes | memoryview] = [os.urandom(17) for _ in range(2 * _IOV_MAX + 5)]
    assert _write_blobs(tmp_path / "p", blobs) == b"".join(bytes(b) for b in blobs)


def test_a_writev_that_writes_nothing_fails_the_pack_rather_than_spinning(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="writev wrote nothing"):
        _write_blobs(tmp_path / "p", [b"abc"], writev=lambda fd, buffers: 0)


def _read(path: Path, cap: int, first: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_to_end(fd, cap, first)
    finally:
        os.close(fd)


def test_a_small_file_as_the_walk_saw_it_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(5000))
    assert _read(path, 1 << 20, 5001) == path.read_bytes()


def test_a_small_file_that_grew_since_the_walk_is_read_to_its_new_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(300_000))  # walked at 10 bytes: several reads, past 64 KiB
    assert _read(path, 1 << 20, 11) == path.read_bytes()


def test_a_file_that_grew_past_the_cap_is_read_no_further_than_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(200_000))
    assert _read(path, 100_001, 11) == path.read_bytes()[:100_001]


def test_an_empty_file_reads_as_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert _read(path, 1 << 20, 1) == b""

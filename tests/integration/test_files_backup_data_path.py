"""What the files backup's data path decides per chunk, seen in the repository it writes:
random data is stored as it is (zstd would not shrink it), text is compressed, a disk image's
zero runs are stored once; and each comes back byte for byte, encrypted or not."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from davit.adapters.files import backup as backup_module
from davit.adapters.files.tree import WalkedFile
from davit.adapters.repository.packs import CODEC_RAW, CODEC_SEALED, CODEC_ZSTD
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import read_lines
from davit.adapters.repository.tuning import Tuning
from tests.integration.test_files_adapter import backup, restore

MiB = 1 << 20
TUNING = Tuning(pack_size=8 * MiB, checkpoint_seconds=60)


def _text(size: int) -> bytes:
    line = b"2024-05-17 INFO backup: stored chunk of the disk image without surprise\n"
    return (line * (size // len(line) + 1))[:size]


def _chunks_of(repo: Repository, run_id: str) -> dict[str, list[bytes]]:
    return {e.path: [bytes.fromhex(c) for c in e.chunks] for e in read_lines(repo.open_tree(repo.resolve(run_id)))}


def _codec(repo: Repository, cid: bytes) -> int:
    ref = repo.blob_ref(cid)
    assert ref is not None
    return ref.codec & ~CODEC_SEALED


@pytest.mark.parametrize("passphrase", [None, "correct horse"], ids=["plain", "encrypted"])
def test_random_data_is_stored_raw_text_compressed_and_both_restore(tmp_path: Path, passphrase: str | None) -> None:
    source, target = tmp_path / "src", tmp_path / "restored"
    source.mkdir()
    (source / "archive.tar.zst").write_bytes(os.urandom(6 * MiB))
    (source / "server.log").write_bytes(_text(3 * MiB))
    repo = Repository.open(tmp_path / "repo", passphrase=passphrase)
    backup(repo, source, "first", tuning=TUNING)

    chunks = _chunks_of(repo, "first")
    assert chunks["archive.tar.zst"] and {_codec(repo, c) for c in chunks["archive.tar.zst"]} == {CODEC_RAW}
    assert chunks["server.log"] and {_codec(repo, c) for c in chunks["server.log"]} == {CODEC_ZSTD}
    restore(repo, target, "first")
    for name in ("archive.tar.zst", "server.log"):
        assert (target / name).read_bytes() == (source / name).read_bytes()


def test_a_chunk_of_random_bytes_around_a_zero_run_is_still_compressed(tmp_path: Path) -> None:
    """The sample sees the zeros: the chunk is compressed, not stored raw."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "mixed.bin").write_bytes(os.urandom(128 << 10) + bytes(300 << 10) + os.urandom(64 << 10))
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "first", tuning=TUNING)
    (cid,) = _chunks_of(repo, "first")["mixed.bin"]
    ref = repo.blob_ref(cid)
    assert ref is not None and ref.codec == CODEC_ZSTD and ref.stored_len < ref.plain_len * 0.6


def test_a_disk_image_with_long_zero_runs_names_its_zero_chunk_once_and_restores(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "restored"
    source.mkdir()
    with open(source / "disk.img", "wb") as fh:
        for _ in range(3):
            fh.write(bytes(9 * MiB))
            fh.write(os.urandom(700 << 10))
    repo = Repository.open(tmp_path / "repo")
    assert repo.chunking is not None
    window = bytes(repo.chunking.max_size)
    encode, zero_windows_encoded = repo.encode, []

    def counting(plain: bytes | memoryview) -> tuple[bytes, bytes | memoryview | None, int]:
        if plain == window:
            zero_windows_encoded.append(len(plain))
        return encode(plain)

    repo.encode = counting  # type: ignore[method-assign]
    backup(repo, source, "first", tuning=TUNING)

    chunks = _chunks_of(repo, "first")["disk.img"]
    zero_id = hashlib.sha256(window).digest()
    assert chunks.count(zero_id) >= 3  # two whole windows of each 9 MiB run, at least
    assert zero_windows_encoded == [len(window)]  # hashed and compressed once for all of them
    ref = repo.blob_ref(zero_id)
    assert ref is not None and ref.codec == CODEC_ZSTD and ref.stored_len < 4096
    restore(repo, target, "first")
    assert (target / "disk.img").read_bytes() == (source / "disk.img").read_bytes()


@pytest.mark.parametrize("inflight", [1, 3, 16])
def test_many_small_files_read_several_to_a_task_all_restore_and_one_changed_meanwhile_alone_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inflight: int
) -> None:
    """Small files are read, hashed and compressed several to a worker task. The writer may
    need a file of a task not yet full (few chunks allowed in flight): that task is sent then,
    and the files after it go into a new one (an earlier version added them to the task already
    running, and the backup failed). A file swapped for another between the walk and its read is
    left out with a warning; the other files of its task are stored."""
    source = tmp_path / "source"
    for i in range(45):
        (source / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 3}" / f"f{i:02d}.txt").write_bytes(_text(100 + 997 * i))
    (source / "large.bin").write_bytes(os.urandom(3 * MiB))  # a large file between small ones
    (source / "z-after.txt").write_bytes(_text(5000))
    real_open = backup_module.open_walked

    def swapped_meanwhile(walked: WalkedFile) -> int:
        if walked.path.endswith("f10.txt"):
            # Another inode under the walked name, made outside the tree: a file of the tree swapped
            # here could be read by a parallel task after the swap, and be left out too.
            replacement = tmp_path / "replacement.txt"
            replacement.write_bytes(_text(5000))
            os.replace(replacement, walked.path)
        return real_open(walked)

    monkeypatch.setattr(backup_module, "open_walked", swapped_meanwhile)
    repo = Repository.open(tmp_path / "repo")
    ctx = backup(repo, source, "b1", tuning=Tuning(pack_size=8 * MiB, checkpoint_seconds=60, inflight_chunks=inflight))
    stored = _chunks_of(repo, "b1")
    assert "d1/f10.txt" not in stored
    assert any("d1/f10.txt" in w and "changed since it was walked" in w for w in ctx.warnings)
    restore(repo, tmp_path / "out", snapshot="b1")
    for path in source.rglob("*"):
        rel = str(path.relative_to(source))
        if path.is_file() and rel != "d1/f10.txt":
            assert (tmp_path / "out" / rel).read_bytes() == path.read_bytes(), rel
    assert not (tmp_path / "out" / "d1" / "f10.txt").exists()

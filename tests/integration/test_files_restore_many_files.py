"""files.restore of trees of many small files: read and written in batches, every file whole,
every chunk checked before its file is created, a refused file failing the run by its name, and
the snapshot's tree read once per run. Driven without a daemon, on a real repository on disk."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from davit.adapters.files import confined
from davit.adapters.files import restore as restore_module
from davit.adapters.files.restore import FilesRestoreWork
from davit.adapters.files.treecheck import parsed
from davit.adapters.repository.packs import pack_path
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import Entry, walk_key
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import CorruptChunk, TargetInTheWay
from davit.domain.jobs import FilesRestoreJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, backup, restore, snapshot_of


def many_small_files(root: Path, count: int = 600) -> None:
    """`count` small files over a few directories, a large file, and one with a long zero run."""
    for i in range(count):
        folder = root / f"d{i % 7}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04d}.txt").write_bytes(f"small file {i}\n".encode() * (1 + i % 50))
    (root / "large.bin").write_bytes(os.urandom(900_000))
    (root / "zeros.img").write_bytes(os.urandom(1000) + b"\0" * 400_000 + os.urandom(1000))


def restore_work(repo: Repository, target: Path, overwrite: bool = False, tuning: Tuning = SMALL) -> FilesRestoreWork:
    spec = FilesRestoreJob(
        name="r", kind="files.restore", source={"job": "job"}, target={"path": str(target), "overwrite": overwrite}
    )
    return FilesRestoreWork(RunInputs(spec, "restore1", tuning, repo=repo))


def test_a_tree_of_many_small_files_restores_every_file_byte_identical(tmp_path: Path) -> None:
    source = tmp_path / "source"
    many_small_files(source)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    _work, ctx = restore(repo, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)
    assert ctx.cursors["restore"]["items"] == len(snapshot_of(source)) + 1  # and the root


def test_a_restore_reads_its_snapshot_tree_once_when_it_is_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    many_small_files(source, 50)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    opened: list[str] = []
    real_open_tree = Repository.open_tree

    def counting_open_tree(self: Repository, snap: object) -> object:
        opened.append("tree")
        return real_open_tree(self, snap)  # type: ignore[arg-type]

    monkeypatch.setattr(Repository, "open_tree", counting_open_tree)
    restore(Repository.open(repo.root), tmp_path / "kept")
    assert len(opened) == 1  # prepare checked it; the steps and the final check used that
    assert snapshot_of(tmp_path / "kept") == snapshot_of(source)

    opened.clear()
    monkeypatch.setattr(restore_module, "KEPT_TREE_ENTRIES", 10)  # a tree too large to keep
    restore(Repository.open(repo.root), tmp_path / "read-again")
    assert len(opened) == 3  # prepare, restore and the final check each read and check it
    assert snapshot_of(tmp_path / "read-again") == snapshot_of(source)


def test_a_corrupt_small_file_chunk_fails_the_run_and_that_file_is_never_created(tmp_path: Path) -> None:
    source = tmp_path / "source"
    many_small_files(source, 200)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    victim = source / "d3" / "sub1" / "f0115.txt"
    [chunk] = [e.chunks for e in _tree_entries(repo) if e.path == "d3/sub1/f0115.txt"]
    ref = repo.blob_ref(bytes.fromhex(chunk[0]))
    assert ref is not None
    pack = pack_path(repo.root, ref.pack)
    raw = bytearray(pack.read_bytes())
    raw[ref.offset + ref.stored_len // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))

    with pytest.raises(CorruptChunk, match=chunk[0]):
        restore(Repository.open(repo.root), tmp_path / "out")
    assert victim.exists()
    assert not (tmp_path / "out" / "d3" / "sub1" / "f0115.txt").exists()


def test_a_small_file_the_target_refuses_fails_the_run_by_its_name_and_no_checkpoint_counts_it(tmp_path: Path) -> None:
    source = tmp_path / "source"
    many_small_files(source, 300)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    target = tmp_path / "out"
    (target / "d3" / "sub2" / "f0206.txt").mkdir(parents=True)  # a directory where the snapshot has a file
    often = Tuning(chunk_size=64 << 10, pack_size=4096, checkpoint_seconds=60, inflight_chunks=4)
    work = restore_work(Repository.open(repo.root), target, overwrite=True, tuning=often)
    ctx = MemoryRunContext(run_id="restore1")
    work.prepare(ctx)
    with pytest.raises(TargetInTheWay, match=r"f0206\.txt"):
        work.run(ctx)
    refused = walk_key("d3/sub2/f0206.txt")
    assert ctx.checkpoints  # checkpoints were recorded before the refused file ...
    assert all(walk_key(cp["cursor"]["last"]) < refused for cp in ctx.checkpoints)  # ... none past it


def _tree_entries(repo: Repository) -> list[Entry]:
    snap = repo.resolve("latest", "job")
    return list(parsed(repo.open_tree(snap), snap.id))


def test_a_restore_starts_writing_each_large_file_to_disk_as_it_goes_and_leaves_small_files_to_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Early writeback: the restored bytes of a large file are handed to the kernel's writeback
    in steps while the restore goes on (the checkpoint's flush then has little left to write)."""
    source = tmp_path / "source"
    many_small_files(source, 20)
    (source / "big.bin").write_bytes(os.urandom(confined.WRITEBACK_STEP * 2 + 12345))
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    started: list[tuple[int, int, int]] = []
    real_fadvise = os.posix_fadvise

    def recording_fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        started.append((os.fstat(fd).st_ino, offset, length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording_fadvise)
    restore(Repository.open(repo.root), tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)
    big = (source / "big.bin").stat().st_size
    big_ino = (tmp_path / "out" / "big.bin").stat().st_ino
    ranges = [(offset, length) for ino, offset, length in started if ino == big_ino]
    assert len(ranges) >= 2 and ranges[0][0] == 0  # in steps, from the start ...
    assert all(a + n == b for (a, n), (b, _m) in itertools.pairwise(ranges))  # ... back to back ...
    assert ranges[-1][0] + ranges[-1][1] == big  # ... to the end
    # small files are left to the checkpoint's flush, which writes them all in one pass
    small = {p.stat().st_ino for p in (tmp_path / "out").rglob("*.txt")}
    assert small and all(p.stat().st_size < confined.WRITEBACK_MIN for p in (tmp_path / "out").rglob("*.txt"))
    assert not [ino for ino, _o, _n in started if ino in small]


def test_a_target_that_refuses_early_writeback_still_restores_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    many_small_files(source, 30)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")

    def refusing_fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "posix_fadvise", refusing_fadvise)
    restore(Repository.open(repo.root), tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)

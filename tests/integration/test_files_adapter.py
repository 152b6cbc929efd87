"""files.backup and files.restore through a real repository on disk, driven without a daemon."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.files import backup as backup_module
from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.files.restore import FilesRestoreWork
from davit.adapters.repository.packs import pack_path
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.adapters.repository.treeformat import read_lines
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import CorruptChunk, RunStopped, SnapshotNotFound, SourceMissing, TargetNotEmpty
from davit.domain.jobs import FilesBackupJob, FilesRestoreJob
from tests.fakes import MemoryRunContext

SMALL = Tuning(chunk_size=64 << 10, pack_size=256 << 10, checkpoint_seconds=60, inflight_chunks=4)


def make_tree(root: Path) -> None:
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "docs" / "readme.txt").write_text("hello davit\n" * 100)
    (root / "docs" / "deep" / "er" / "unicode-ünï.txt").write_text("ÿ€𝄞" * 50)
    (root / "empty.bin").write_bytes(b"")
    (root / "random.bin").write_bytes(os.urandom(700_000))
    (root / "zeros.bin").write_bytes(b"\0" * 300_000)
    (root / "same-a.txt").write_text("identical content\n" * 500)
    (root / "same-b.txt").write_text("identical content\n" * 500)
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "script.sh", 0o750)
    os.chmod(root / "docs" / "deep", 0o711)
    os.symlink("docs/readme.txt", root / "link-to-readme")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "skip.tmp").write_text("excluded")
    with socket.socket(socket.AF_UNIX) as sock:  # a socket is the one kind a backup cannot store
        sock.bind(str(root / "a-socket"))
    for i, p in enumerate(sorted(root.rglob("*"))):
        if not p.is_symlink():
            os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i * 1000))


def snapshot_of(root: Path) -> dict[str, tuple[object, ...]]:
    """What must survive a round trip: type, mode, mtime, content hash or link target."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("l", os.readlink(p), st.st_mtime_ns)
        elif p.is_dir():
            out[rel] = ("d", st.st_mode & 0o7777, st.st_mtime_ns)
        elif p.is_file():
            out[rel] = ("f", st.st_mode & 0o7777, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def backup(
    repo: Repository, source: Path, run_id: str, ctx: MemoryRunContext | None = None, name: str = "job", tuning: Tuning = SMALL
) -> MemoryRunContext:
    spec = FilesBackupJob(name=name, kind="files.backup", source={"path": str(source), "exclude": ["*.tmp"]})
    work = FilesBackupWork(RunInputs(spec, run_id, tuning, repo=repo))
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def restore(
    repo: Repository, target: Path, snapshot: str = "latest", overwrite: bool = False, ctx: MemoryRunContext | None = None
) -> tuple[FilesRestoreWork, MemoryRunContext]:
    spec = FilesRestoreJob(
        name="r",
        kind="files.restore",
        source={"job": "job", "snapshot": snapshot},
        target={"path": str(target), "overwrite": overwrite},
    )
    work = FilesRestoreWork(RunInputs(spec, "restore1", SMALL, repo=repo))
    ctx = ctx or MemoryRunContext(run_id="restore1")
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return work, ctx


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo")


def without_excluded(snap: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    return {k: v for k, v in snap.items() if not k.endswith(".tmp") and k != "a-fifo"}


def test_a_tree_round_trips_byte_identical_with_modes_mtimes_and_symlinks(tree: Path, repo: Repository, tmp_path: Path) -> None:
    ctx = backup(repo, tree, "b1")
    assert any("a-socket" in w for w in ctx.warnings)  # sockets are reported, not silently dropped
    restore(repo, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))


def test_identical_content_is_stored_once_and_an_unchanged_tree_writes_no_new_chunk(tree: Path, repo: Repository) -> None:
    first = backup(repo, tree, "b1")
    assert len(first.chunks_written) == len(set(first.chunks_written))
    second = backup(repo, tree, "b2")
    assert second.chunks_written == []
    assert len(repo.snapshots("job")) == 2


def test_a_changed_file_stores_only_its_new_chunks(tree: Path, repo: Repository) -> None:
    backup(repo, tree, "b1")
    with open(tree / "random.bin", "r+b") as fh:
        fh.seek(100_000)
        fh.write(b"X" * 10)
    again = backup(repo, tree, "b2")
    assert len(again.chunks_written) == 1  # one 64 KiB chunk of random.bin changed


def test_a_backup_stopped_at_a_checkpoint_resumes_without_writing_a_chunk_twice(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "many"
    source.mkdir()
    for i in range(60):
        (source / f"f{i:02d}.bin").write_bytes(os.urandom(50_000))
    ctx = MemoryRunContext(run_id="b1", stop_after_checkpoints=2)
    with pytest.raises(RunStopped):
        backup(repo, source, "b1", ctx)
    written_before = list(ctx.chunks_written)
    assert written_before and not repo.snapshot_exists("b1")
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    backup(repo, source, "b1", ctx)
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written)) == 60
    restore(repo, tmp_path / "out", snapshot="b1")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)


def test_a_restore_stopped_at_a_checkpoint_resumes_and_completes(tree: Path, repo: Repository, tmp_path: Path) -> None:
    for i in range(40):  # enough entries after the first checkpoints for the stop to land mid-way
        (tree / "docs" / f"page{i:02d}.bin").write_bytes(os.urandom(50_000))
    backup(repo, tree, "b1")
    ctx = MemoryRunContext(run_id="restore1", stop_after_checkpoints=1)
    tuning = Tuning(chunk_size=64 << 10, pack_size=100_000, checkpoint_seconds=60)
    spec = FilesRestoreJob(name="r", kind="files.restore", source={"job": "job"}, target={"path": str(tmp_path / "out")})
    work = FilesRestoreWork(RunInputs(spec, "restore1", tuning, repo=repo))
    details = work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    items_at_stop = ctx.cursors["restore"]["items"]
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    resumed = FilesRestoreWork(RunInputs(spec, "restore1", tuning, details, repo=repo))  # as after a restart: no prepare again
    resumed.run(ctx)
    resumed.finish(ctx)
    assert 0 < items_at_stop < ctx.cursors["restore"]["items"]
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))


def test_a_restore_refuses_a_non_empty_target_unless_overwrite(tree: Path, repo: Repository, tmp_path: Path) -> None:
    backup(repo, tree, "b1")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(TargetNotEmpty):
        restore(repo, target)
    assert (target / "precious.txt").read_text() == "keep me"
    restore(repo, target, overwrite=True)
    assert (target / "docs" / "readme.txt").exists() and (target / "precious.txt").exists()


def test_a_corrupt_chunk_is_detected_before_its_bytes_reach_the_target(tmp_path: Path, repo: Repository) -> None:
    source = tmp_path / "one"
    source.mkdir()
    (source / "data.bin").write_bytes(os.urandom(40_000))
    backup(repo, source, "b1")
    [idx] = (repo.root / "index").glob("*.idx")
    pack = pack_path(repo.root, idx.stem)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    fresh = Repository.open(repo.root)
    with pytest.raises(CorruptChunk):
        restore(fresh, tmp_path / "out")
    restored = tmp_path / "out" / "data.bin"
    assert not restored.exists() or restored.stat().st_size == 0


def test_a_missing_source_fails_with_a_clear_error(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(SourceMissing, match="does not exist"):
        backup(repo, tmp_path / "nope", "b1")


def test_retention_forgets_old_snapshots_and_keeps_every_chunk_still_referenced(tmp_path: Path, repo: Repository) -> None:
    assert_retention_keeps_what_remaining_snapshots_need(repo, tmp_path, lambda: Repository.open(repo.root))


def assert_retention_keeps_what_remaining_snapshots_need(
    repo: Repository, tmp_path: Path, reopen: Callable[[], Repository]
) -> None:
    """Four backups with one file changing each time, keep the last two: what they reference
    stays (every remaining snapshot restores completely), the rest is pruned."""
    from davit.adapters.repository.retention import apply_retention
    from davit.domain.jobs import Retention

    source = tmp_path / "src"
    source.mkdir()
    (source / "stable.bin").write_bytes(os.urandom(100_000))
    for i in range(4):
        (source / "changing.bin").write_bytes(os.urandom(100_000))
        backup(repo, source, f"b{i}")
    packs_before = len(list((repo.root / "index").glob("*.idx")))
    result = apply_retention(repo, "job", Retention(keep_last=2))
    assert sorted(result["forgotten"]) == ["b0", "b1"]
    assert result["packs_deleted"] + result["packs_rewritten"] >= 1
    assert len(list((repo.root / "index").glob("*.idx"))) <= packs_before
    for snap in ("b2", "b3"):
        restore(reopen(), tmp_path / f"out-{snap}", snapshot=snap)
        assert (tmp_path / f"out-{snap}" / "stable.bin").read_bytes() == (source / "stable.bin").read_bytes()


def test_the_chunk_writer_stores_each_content_once_and_reports_what_a_seal_wrote(repo: Repository) -> None:
    from davit.adapters.repository.chunkwriter import ChunkWriter

    writer = ChunkWriter(repo, SMALL)
    a = writer.put(b"a" * 1000)
    b = writer.put(os.urandom(5000))
    assert writer.put(b"a" * 1000) == a
    assert sorted(writer.seal()) == sorted([a, b])
    assert writer.put(b"a" * 1000) == a and writer.seal() == []
    assert repo.read_chunk(bytes.fromhex(a)) == b"a" * 1000


def test_an_overwrite_restore_replaces_a_symlink_in_the_way_instead_of_writing_through_it(
    tree: Path, repo: Repository, tmp_path: Path
) -> None:
    backup(repo, tree, "b1")
    target = tmp_path / "target"
    (target / "docs").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("must stay untouched")
    os.symlink(outside, target / "docs" / "readme.txt")
    restore(repo, target, overwrite=True)
    assert not (target / "docs" / "readme.txt").is_symlink()
    assert (target / "docs" / "readme.txt").read_text() == "hello davit\n" * 100
    assert outside.read_text() == "must stay untouched"


def test_an_empty_snapshot_reference_names_no_snapshot_even_when_there_is_only_one(repo: Repository, tree: Path) -> None:
    backup(repo, tree, "run1")
    assert len(repo.snapshots("job")) == 1
    with pytest.raises(SnapshotNotFound):
        repo.resolve("", "job")


def test_a_tree_damaged_after_its_publish_fails_the_backups_verification(tree: Path, repo: Repository) -> None:
    # The verification of a snapshot published by the same run no longer parses the tree's lines
    # (publish did, from the same bytes): it must still notice a stored tree that is not intact.
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(tree), "exclude": ["*.tmp"]})
    work = FilesBackupWork(RunInputs(spec, "b1", SMALL, repo=repo))
    ctx = MemoryRunContext(run_id="b1")
    work.prepare(ctx)
    work.run(ctx)
    stored = repo.root / "snapshots" / "b1" / "tree.jsonl.zst"
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    stored.chmod(0o644)
    stored.write_bytes(bytes(damaged))

    with pytest.raises(CorruptChunk, match="does not match its manifest"):
        work.finish(ctx)


def _stats_of_the_stored_tree(repo: Repository, info: SnapshotInfo) -> dict[str, int]:
    entries = list(read_lines(repo.open_tree(info)))
    kinds = {"f": "files", "d": "dirs", "l": "links"}
    want = {"files": 0, "dirs": 0, "links": 0, "specials": 0}
    for e in entries:
        want[kinds.get(e.type, "specials")] += 1
    return want | {"bytes": sum(e.size for e in entries), "chunk_refs": sum(len(e.chunks) for e in entries)}


@pytest.mark.parametrize("stopped_once", [False, True], ids=["stored-in-one-go", "resumed-after-a-stop"])
def test_a_snapshots_stats_count_what_its_tree_holds(tree: Path, repo: Repository, stopped_once: bool) -> None:
    # The store step counts the lines it writes (the publish does not read them back); a resumed
    # one's publish counts the staged lines again (read_counts). Either way the manifest's
    # figures must be those of the entries the published tree holds: a FIFO and a hard link too.
    os.mkfifo(tree / "a-fifo")
    os.link(tree / "script.sh", tree / "script-hardlink.sh")
    ctx = MemoryRunContext(run_id="b1", stop_after_checkpoints=1 if stopped_once else None)
    if stopped_once:
        with pytest.raises(RunStopped):
            backup(repo, tree, "b1", ctx)
        assert not repo.snapshot_exists("b1") and ctx.cursor("store")
        ctx.stop.clear()
        ctx.stop_after_checkpoints = None
    backup(repo, tree, "b1", ctx)
    info = repo.resolve("b1")
    want = _stats_of_the_stored_tree(repo, info)

    assert {k: info.stats[k] for k in want} == want
    assert want["files"] == 9 and want["links"] == 2 and want["specials"] == 1 and want["chunk_refs"] > 0


def test_only_a_resumed_backups_publish_reads_its_staged_tree_back(
    tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup whose store step wrote the whole staged tree under the lock its publish holds
    checked every chunk as it named it: the publish does not read the tree back (that reading
    was most of a publish). One resumed after a stop staged lines under an earlier lock, so its
    publish reads them all back and checks each chunk against the repository as it is now."""
    reads: list[str] = []
    real_read_counts = backup_module.read_counts

    def read_counts(lines: Any) -> Any:
        reads.append("staged tree")
        return real_read_counts(lines)

    monkeypatch.setattr(backup_module, "read_counts", read_counts)
    source = tmp_path / "src"
    source.mkdir()
    for i in range(6):
        (source / f"f{i}.bin").write_bytes(os.urandom(150_000))
    backup(repo, source, "whole")
    assert reads == []
    assert repo.resolve("whole").stats["files"] == 6

    (source / "new.bin").write_bytes(os.urandom(300_000))
    ctx = MemoryRunContext(run_id="resumed", stop_after_checkpoints=1)
    with pytest.raises(RunStopped):
        backup(repo, source, "resumed", ctx)
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    backup(repo, source, "resumed", ctx)
    assert reads == ["staged tree"]
    assert repo.resolve("resumed").stats["files"] == 7

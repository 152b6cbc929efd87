"""The repository's locks and prune attacked (issue 14, guarantee 14): clocks stepped forward, a
writer whose lock another host took over, a full disk under the refresh thread, entries in
`locks/` that are no lock, and a staging tree that vanishes during a prune's scan.

Each scenario lands its race deterministically through a hook on a real method (the method
still runs); the repositories, backups, threads and files are real.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from davit.adapters.repository.fsutil import storage_error
from davit.adapters.repository.locks import DirectoryLockBackend, LockInfo, RepositoryLocks, _stamp, process_start_time
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention, prune
from davit.adapters.steps import PUBLISH
from davit.domain.errors import CorruptChunk, RepositoryLockLost, SourceMissing
from davit.domain.jobs import Retention
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import backup
from tests.integration.test_repository_locks import files_work, random_tree, stop_after, unreadable_chunks


def _backup_while_a_prune_lands_mid_store(
    tmp_path: Path, pruner: Repository, prune_after: float = 0.0, started: list[Any] | None = None
) -> tuple[Any, MemoryRunContext]:
    """Job `a` has snapshots a0 (content X) and a1; job `b` backs up X again (every chunk
    deduplicated against a0). Once b's walk is done, and before its store step has flushed its
    staging tree, `pruner` applies keep_last=1 to `a` (forgetting a0) in another thread; b goes
    on when that prune is done or is seen waiting for b's lock. Then b publishes and finishes.
    The prune starts `prune_after` seconds after b's walk."""
    writer = Repository.open(tmp_path / "repo")
    x = random_tree(tmp_path / "x")
    backup(writer, x, "a0", name="a")
    backup(writer, random_tree(tmp_path / "y"), "a1", name="a")
    shutil.copytree(x, tmp_path / "b")

    work = files_work(writer, tmp_path / "b", "b0", "b")
    ctx = MemoryRunContext(run_id="b0")
    work.prepare(ctx)
    if started is not None:
        started += [work, ctx]
    prune_over = threading.Event()
    prune_errors: list[BaseException] = []
    real_live_locks = pruner.locks.live_locks

    def live_locks(exclude: str | None = None) -> Any:
        found = real_live_locks(exclude)
        if any(not info.exclusive for info in found):
            prune_over.set()  # the prune waits for b's shared lock: b may go on
        return found

    pruner.locks.live_locks = live_locks  # type: ignore[method-assign]

    def run_prune() -> None:
        try:
            apply_retention(pruner, "a", Retention(keep_last=1))
        except BaseException as exc:  # reported by the caller's assertions
            prune_errors.append(exc)
        finally:
            prune_over.set()

    pruning = threading.Thread(target=run_prune)
    real_walk = work._walk

    def walk() -> Any:
        yield from real_walk()
        time.sleep(prune_after)
        pruning.start()
        assert prune_over.wait(30)

    work._walk = walk  # type: ignore[method-assign]
    work.run(ctx)
    work.finish(ctx)
    pruning.join(30)
    assert not prune_errors, prune_errors
    return writer, ctx


def test_a_clock_stepped_forward_does_not_let_a_prune_take_the_lock_of_a_live_writer_on_this_host(tmp_path: Path) -> None:
    """The wall clock jumps ahead by more than the TTL (a VM resumed, NTP stepping): every lock
    on this host looks expired until its holder's next refresh. The holder's process is alive
    here and the prune can see it, so the lock stays: before the fix the prune removed it as
    expired, forgot a0 and deleted the pack b had just deduplicated against, and b published
    a snapshot whose chunks were gone (its finish failed, `verify` failed it)."""
    pruner = Repository.open(tmp_path / "repo")
    pruner.locks.clock = lambda: time.time() + 2 * pruner.locks.ttl
    _backup_while_a_prune_lands_mid_store(tmp_path, pruner)
    assert unreadable_chunks(tmp_path / "repo") == []
    assert {s.id for s in Repository.open(tmp_path / "repo", create=False).snapshots()} == {"a1", "b0"}


def test_a_writer_whose_lock_another_host_took_over_never_publishes_a_snapshot_with_pruned_chunks(tmp_path: Path) -> None:
    """Another host takes b's lock as stale and prunes: here because its TTL is shorter than
    b's (a misconfiguration; a suspended or partitioned writer looks the same to it). b must
    not publish a tree naming what that prune deleted: before the fix it did (and only its
    finish noticed). b holds one lock from store through publish, so its publish finds that
    lock taken away before creating the manifest (RepositoryLockLost, retried); the retry
    takes a new lock, checks the staged tree against the repository as it is then, and fails
    the run without publishing. Every published snapshot still verifies."""
    pruner = Repository.open(tmp_path / "repo")
    pruner.locks.hostname = "another-host"
    pruner.locks.ttl = 1.0  # b's lock, 300 s, is not refreshed within a second: stale to the pruner
    started: list[Any] = []
    with pytest.raises(RepositoryLockLost, match="removed it as stale"):
        _backup_while_a_prune_lands_mid_store(tmp_path, pruner, prune_after=1.5, started=started)
    repo = Repository.open(tmp_path / "repo", create=False)
    assert not repo.snapshot_exists("b0")
    work, ctx = started
    with pytest.raises(SourceMissing, match="pruned while this run did not hold its repository lock"):
        work.run(ctx)  # the executor's retry of the run
    assert not repo.snapshot_exists("b0")
    assert unreadable_chunks(repo.root) == []


def test_a_publish_whose_lock_was_removed_meanwhile_writes_no_manifest(tmp_path: Path) -> None:
    """The lock a publish holds is removed (another host judged it expired) while the tree is
    written: the manifest, which would make the snapshot exist after a prune may have run,
    is not written; the publish fails with RepositoryLockLost (it is retried under a new lock,
    which checks the tree's chunks again)."""
    repo = Repository.open(tmp_path / "repo")
    tree = zstandard.ZstdCompressor().compress(b'{"p": "f", "t": "f", "c": []}\n')
    manifest = {"id": "s0", "job": "j", "kind": "files", "created_at": "2024-01-01T00:00:00+00:00"}
    with repo.locked(exclusive=False) as lock:
        (repo.root / "locks" / lock.name).unlink()  # as the other host does
        with pytest.raises(RepositoryLockLost):
            repo.publish_snapshot(manifest, tree)
    assert not repo.snapshot_exists("s0")


class _FullOnce(DirectoryLockBackend):
    """The real lock directory, on a disk that is full at the first refresh only."""

    def __init__(self, directory: Path, tmp_dir: Path) -> None:
        super().__init__(directory, tmp_dir)
        self.refreshes = 0
        self.refreshed_after_full = threading.Event()

    def create(self, name: str, data: bytes) -> bool:
        if name.endswith(".000000.json"):  # taking the lock: there is room
            return super().create(name, data)
        self.refreshes += 1  # a refresh creates the next generation
        if self.refreshes == 1:
            raise storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.directory)
        done = super().create(name, data)
        self.refreshed_after_full.set()
        return done


def test_a_refresh_that_meets_a_full_disk_does_not_end_the_refreshing(tmp_path: Path) -> None:
    """A full disk made the refresh raise StorageFull, which the refresh thread did not catch
    (it is no OSError): the thread died and the lock expired while held, for another host to
    take over. It must log and go on refreshing once there is room again."""
    repo = Repository.open(tmp_path / "repo")
    backend = _FullOnce(repo.root / "locks", repo.root / "tmp")
    locks = RepositoryLocks(backend, ttl=0.3)
    lock = locks.acquire(exclusive=True)
    try:
        assert backend.refreshed_after_full.wait(5), "the refresh thread died at the full disk"
        lock.ensure_held()
    finally:
        lock.release()


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "fifo"])
def test_an_entry_of_the_lock_directory_that_is_no_lock_file_blocks_no_one(tmp_path: Path, kind: str) -> None:
    """`locks/x.json` that is a directory or a symlink made every lock acquisition raise
    (IsADirectoryError, ELOOP) and a FIFO made it hang in open(): one stray entry stopped every
    backup and prune of the repository for good. Nothing davit writes is like that; it is no
    lock, and is passed over."""
    repo = Repository.open(tmp_path / "repo")
    stray = repo.root / "locks" / "stray.json"
    stray.parent.mkdir(exist_ok=True)
    if kind == "directory":
        stray.mkdir()
    elif kind == "dangling symlink":
        stray.symlink_to(tmp_path / "nowhere.json")
    else:
        os.mkfifo(stray)
    outcome: list[Any] = []

    def take() -> None:
        try:
            with repo.locked(exclusive=True, stop=stop_after(5)):
                outcome.append("held")
        except BaseException as exc:  # reported below
            outcome.append(exc)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    taker.join(10)
    if taker.is_alive():  # blocked in open() of the FIFO: let it go before failing
        with open(stray, "wb"):
            pass
        taker.join(5)
        pytest.fail("taking the lock hung on the FIFO")
    assert outcome == ["held"]


def test_a_staging_tree_removed_during_the_prunes_reference_scan_does_not_fail_the_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """davitd removes an ended run's staging without a lock (its snapshot is published, or it
    never will be), so it may vanish between the prune's listing of staging trees and its open
    of one: the prune failed with FileNotFoundError. Such a tree names nothing the prune must
    keep (a published snapshot's chunks are counted from its manifest, listed before)."""
    repo = Repository.open(tmp_path / "repo")
    backup(repo, random_tree(tmp_path / "src"), "s0", name="s")
    for run in ("ended1", "ended2"):
        (repo.root / "staging" / run).mkdir()
        (repo.root / "staging" / run / "tree.jsonl").write_text("")
    real_glob = Path.glob

    def glob(self: Path, pattern: str) -> Any:
        found = list(real_glob(self, pattern))
        if self.name == "staging":
            for path in found:  # the runs' staging is removed right after the listing
                shutil.rmtree(path.parent)
        return iter(found)

    monkeypatch.setattr(Path, "glob", glob)
    prune(repo, grace_seconds=0)
    monkeypatch.undo()
    assert unreadable_chunks(repo.root) == []


def test_a_lock_file_of_this_host_whose_process_lives_is_live_even_when_its_expiry_has_passed(tmp_path: Path) -> None:
    """Another process of this host holds a lock whose expiry lies in the past by the reader's
    clock (the clock was stepped forward before the holder's next refresh): the process is
    alive with the same start time, so the lock is live."""
    repo = Repository.open(tmp_path / "repo")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        locks = repo.locks
        start = process_start_time(holder.pid)
        assert start is not None
        past = _stamp(locks.clock() - 10)
        info = LockInfo(
            id="ab" * 16,
            owner=locks.hostname,
            boot_id=locks.boot_id,
            pid=holder.pid,
            start_time=start,
            run_id="",
            exclusive=False,
            created=past,
            expires=past,
            pid_ns=locks.pid_ns,
        )
        assert locks.stale_reason(info) is None
        assert "is gone" in (locks.stale_reason(LockInfo(**{**info.__dict__, "pid": 999_999})) or "")
        assert "another process" in (locks.stale_reason(LockInfo(**{**info.__dict__, "start_time": start + 1})) or "")
    finally:
        holder.kill()
        holder.wait()


def _prune_in_time(repo: Repository, fifos: list[Path]) -> list[Any]:
    """Prune in a thread; if it is still blocked after 10 s (in open() of a FIFO), open the FIFOs
    for writing to let it go, and fail."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(prune(repo, grace_seconds=0))
        except BaseException as exc:  # reported by the caller
            outcome.append(exc)

    pruning = threading.Thread(target=run, daemon=True)
    pruning.start()
    pruning.join(10)
    if pruning.is_alive():
        for fifo in fifos:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        pruning.join(10)
        pytest.fail("the prune hung, holding the exclusive lock, on a FIFO")
    return outcome


@pytest.mark.parametrize("where", ["staging tree", "damaged snapshot's tree"])
def test_a_fifo_in_place_of_a_tree_the_prune_may_skip_does_not_hang_the_prune(tmp_path: Path, where: str) -> None:
    """A FIFO where a staging tree or a damaged snapshot's tree should be made the prune block
    in open() forever while holding the exclusive lock (refreshed all along): every backup of
    the repository waited behind it. Neither is anything davit wrote: the prune passes it over."""
    repo = Repository.open(tmp_path / "repo")
    backup(repo, random_tree(tmp_path / "src"), "s0", name="s")
    if where == "staging tree":
        (repo.root / "staging" / "r1").mkdir()
        fifo = repo.root / "staging" / "r1" / "tree.jsonl"
    else:
        (repo.root / "snapshots" / "bad").mkdir()
        (repo.root / "snapshots" / "bad" / "manifest.json").write_text("{")
        fifo = repo.root / "snapshots" / "bad" / "tree.jsonl.zst"
    os.mkfifo(fifo)
    outcome = _prune_in_time(repo, [fifo])
    assert isinstance(outcome[0], dict), outcome
    assert unreadable_chunks(repo.root) == []


def test_a_fifo_in_place_of_a_published_snapshots_tree_fails_the_prune_instead_of_hanging_it(tmp_path: Path) -> None:
    """A published snapshot whose tree is a FIFO: the prune cannot know what it names, so it
    stops (CorruptChunk naming the snapshot) rather than blocking everyone for good."""
    repo = Repository.open(tmp_path / "repo")
    backup(repo, random_tree(tmp_path / "src"), "s0", name="s")
    tree = repo.root / "snapshots" / "s0" / "tree.jsonl.zst"
    tree.unlink()
    os.mkfifo(tree)
    outcome = _prune_in_time(repo, [tree])
    assert isinstance(outcome[0], CorruptChunk) and "not a regular file" in str(outcome[0]), outcome


def test_a_backups_staging_directory_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """The Repository class is also used as a library (tests, bench) under a umask davit does
    not set: the staging directory of a files backup in progress was made 0755 (mkdir's
    default mode), where everything in a repository is 0700/0600."""
    repo = Repository.open(tmp_path / "repo")
    work = files_work(repo, random_tree(tmp_path / "src"), "u0", "u")
    ctx = MemoryRunContext(run_id="u0")
    work.prepare(ctx)
    ctx.done.add(PUBLISH)  # the store step only: its staging stays
    old = os.umask(0o022)
    try:
        work.run(ctx)
    finally:
        os.umask(old)
    assert (repo.root / "staging" / "u0").stat().st_mode & 0o777 == 0o700

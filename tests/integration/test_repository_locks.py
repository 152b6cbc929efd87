"""Pruning against concurrent writers (issue 14, findings 3, 4 and the prune part of 9), with
real repositories on disk, real backups and real threads and processes.

The lock protocol is described in davit/adapters/repository/locks.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.repository.locks import HeldLock, boot_id, pid_namespace, process_start_time
from davit.adapters.repository.packs import index_path, pack_path
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention, prune
from davit.adapters.repository.treeformat import read_lines
from davit.adapters.runwork import RunInputs
from davit.adapters.steps import PUBLISH
from davit.domain.errors import CorruptChunk, RepositoryLockLost, RunStopped, SourceMissing
from davit.domain.jobs import FilesBackupJob, Retention
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, backup

ROOT = Path(__file__).resolve().parents[2]


def unreadable_chunks(root: Path) -> list[str]:
    """What `davit verify` checks, for every snapshot: each chunk its tree names reads back and
    matches its id. Through a fresh Repository, so nothing cached hides a deleted pack."""
    repo = Repository.open(root, create=False)
    problems = []
    for snap in repo.snapshots():
        for entry in read_lines(repo.open_tree(snap)):
            for chunk in entry.chunks:
                try:
                    repo.read_chunk(bytes.fromhex(chunk))
                except CorruptChunk as exc:
                    problems.append(f"{snap.id} {entry.path}: {exc}")
    repo.close()
    return problems


def files_work(repo: Repository, source: Path, run_id: str, job: str) -> FilesBackupWork:
    spec = FilesBackupJob(name=job, kind="files.backup", source={"path": str(source)})
    return FilesBackupWork(RunInputs(spec, run_id, SMALL, repo=repo))


def random_tree(root: Path, files: int = 3, size: int = 150_000) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
    return root


def write_lock(repo: Repository, age: float = 0.0, **fields: Any) -> Path:
    """A lock file as another process (or host) would have left it, last written `age`
    seconds ago (its mtime: the repository server's clock, which judges another host's lock)."""
    now = datetime.now(UTC)
    lock = {
        "id": os.urandom(16).hex(),
        "owner": "other-host",
        "boot_id": "another-boot",
        "pid": 4242,
        "start_time": 1,
        "run_id": "",
        "exclusive": False,
        "created": now.isoformat(),
        "expires": (now + timedelta(seconds=300)).isoformat(),
        **fields,
    }
    path = repo.root / "locks" / f"{lock['id']}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(lock))
    if age:
        written = time.time() - age
        os.utime(path, (written, written))
    return path


def stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


# --- finding 3: a publish between prune's phases -----------------------------------------------


def test_a_publish_landing_between_the_phases_of_a_prune_keeps_every_chunk_of_the_new_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job `a` prunes (keep_last=1) while job `b`, whose store step is done, publishes. The
    publish is made to land exactly after prune has listed the snapshots and before it lists
    the staging trees: prune's first `snapshots()` call without a job starts it and waits
    (up to 2 s) for it to finish. Before the fix it did, the new snapshot's chunks looked
    unreferenced and their packs were deleted; now the publish waits for the prune's lock."""
    repo = Repository.open(tmp_path / "repo")
    for i in range(2):
        backup(repo, random_tree(tmp_path / f"a{i}"), f"a{i}", name="a")
    b_work = files_work(repo, random_tree(tmp_path / "b"), "b0", "b")
    b_ctx = MemoryRunContext(run_id="b0")
    b_work.prepare(b_ctx)
    b_ctx.done.add(PUBLISH)  # run the store step only
    b_work.run(b_ctx)
    b_ctx.done.discard(PUBLISH)

    published = threading.Event()
    publish_errors: list[BaseException] = []

    def publish_b() -> None:
        try:
            b_work.run(b_ctx)
            b_work.finish(b_ctx)
        except BaseException as exc:  # reported by the assertion below
            publish_errors.append(exc)
        finally:
            published.set()

    publisher = threading.Thread(target=publish_b)
    real_snapshots = repo.snapshots
    armed = [True]

    def snapshots(job: str | None = None) -> Any:
        found = real_snapshots(job)
        if job is None and armed[0] and threading.current_thread() is threading.main_thread():
            armed[0] = False
            publisher.start()
            published.wait(2)  # the publish happens here, unless a lock keeps it out
        return found

    monkeypatch.setattr(repo, "snapshots", snapshots)
    result = apply_retention(repo, "a", Retention(keep_last=1))
    publisher.join(30)

    assert result["forgotten"] == ["a0"] and result["packs_deleted"] >= 1
    assert not armed[0], "the prune never reached its reference scan"
    assert not publish_errors, publish_errors
    assert repo.snapshot_exists("b0")
    assert unreadable_chunks(repo.root) == []


# --- finding 4: a stale index ---------------------------------------------------------------------


def test_a_pack_pruned_through_another_repository_object_is_no_longer_answered_as_present(tmp_path: Path) -> None:
    """Two Repository objects on one directory (two daemons, or one reopened). One prunes;
    the other's `has` stops answering yes at its next lock, and a backup through it stores the
    pruned content again, so its snapshot is whole."""
    pruner = Repository.open(tmp_path / "repo")
    other = Repository.open(tmp_path / "repo")
    first = random_tree(tmp_path / "first")
    backup(other, first, "o0", name="o")
    backup(other, random_tree(tmp_path / "second"), "o1", name="o")
    pruned_chunk = next(bytes.fromhex(c) for e in read_lines(other.open_tree(other.resolve("o0"))) for c in e.chunks)
    assert other.has(pruned_chunk)

    apply_retention(pruner, "o", Retention(keep_last=1))

    with other.locked(exclusive=False):
        assert not other.has(pruned_chunk)
    backup(other, first, "n0", name="n")  # the same content as the pruned snapshot
    assert unreadable_chunks(other.root) == []


def test_a_backup_whose_chunks_vanished_before_its_finish_fails_naming_them(tmp_path: Path) -> None:
    """A pack deleted behind the backup's back (another process's prune, a lost lock) while
    davitd was down between the run's publish and its finish: the finish of the restarted
    davitd looks at the repository as it is now and fails, instead of reporting success. (A
    finish right after a publish by the same process relies on that publish's check, made
    under the lock held when the manifest was created.)"""
    repo = Repository.open(tmp_path / "repo")
    source = random_tree(tmp_path / "src")
    work = files_work(repo, source, "r0", "j")
    ctx = MemoryRunContext(run_id="r0")
    work.prepare(ctx)
    work.run(ctx)
    pack = next(p.stem for p in (repo.root / "index").glob("*.idx"))
    index_path(repo.root, pack).unlink()
    pack_path(repo.root, pack).unlink()
    restarted = files_work(Repository.open(tmp_path / "repo", create=False), source, "r0", "j")
    with pytest.raises(SourceMissing, match="chunks it names are missing"):
        restarted.finish(ctx)


# --- stale and live locks ---------------------------------------------------------------------


def test_the_lock_of_a_killed_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\n"
            "from davit.adapters.repository.repository import Repository\n"
            "repo = Repository.open(Path(sys.argv[1]))\n"
            "with repo.locked(exclusive=False):\n    print('held', flush=True)\n    time.sleep(60)\n",
            str(repo.root),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    # while it lives, its shared lock keeps a prune out
    with pytest.raises(RunStopped), repo.locked(exclusive=True, stop=stop_after(0.5)):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert len(list((repo.root / "locks").glob("*.json"))) == 1  # left behind by the kill

    started = time.monotonic()
    with repo.locked(exclusive=True, stop=stop_after(10)):
        assert time.monotonic() - started < 2
    assert list((repo.root / "locks").glob("*.json")) == []


def test_an_expired_lock_of_another_host_is_taken_over(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    old = datetime.now(UTC) - timedelta(hours=1)
    stale = write_lock(
        repo, age=3600, exclusive=True, created=old.isoformat(), expires=(old + timedelta(seconds=300)).isoformat()
    )
    started = time.monotonic()
    with repo.locked(exclusive=False, stop=stop_after(10)):
        assert time.monotonic() - started < 2
        assert not stale.exists()


def test_a_lock_of_a_pid_in_another_pid_namespace_is_judged_by_its_expiry_only(tmp_path: Path) -> None:
    """Two containers with host networking share a hostname and a kernel, not their pids."""
    repo = Repository.open(tmp_path / "repo")
    live = write_lock(repo, exclusive=True, owner=socket.gethostname(), boot_id=boot_id(), pid_ns="pid:[1]", pid=999_999)
    with pytest.raises(RunStopped), repo.locked(exclusive=False, stop=stop_after(0.4)):
        pass
    assert live.exists()
    write_lock(
        repo, exclusive=True, owner=socket.gethostname(), boot_id=boot_id(), pid_ns=pid_namespace(), pid=999_999
    )  # this namespace, no such pid: stale at once
    live.unlink()
    with repo.locked(exclusive=False, stop=stop_after(5)):
        pass
    assert list((repo.root / "locks").glob("*.json")) == []


@pytest.mark.parametrize("holder_exclusive, asked_exclusive", [(True, False), (False, True), (True, True)])
def test_a_live_lock_of_another_host_blocks_until_the_wait_is_stopped(
    tmp_path: Path, holder_exclusive: bool, asked_exclusive: bool
) -> None:
    repo = Repository.open(tmp_path / "repo")
    live = write_lock(repo, exclusive=holder_exclusive)
    started = time.monotonic()
    with pytest.raises(RunStopped), repo.locked(exclusive=asked_exclusive, stop=stop_after(0.6)):
        pass
    assert time.monotonic() - started >= 0.5
    assert live.exists()
    assert [p.name for p in (repo.root / "locks").iterdir()] == [live.name]  # ours was removed


def test_two_shared_locks_coexist(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    write_lock(repo, exclusive=False)
    with repo.locked(exclusive=False, stop=stop_after(5)):
        assert len(list((repo.root / "locks").glob("*.json"))) == 2


def test_a_waiting_prune_makes_new_writers_wait_so_a_stream_of_backups_cannot_starve_it(tmp_path: Path) -> None:
    """A shared lock is held; a prune starts waiting; a new writer then arrives. The writer
    backs off until the prune has had its turn (instead of the prune waiting for a moment with
    no writer at all)."""
    repo = Repository.open(tmp_path / "repo")
    order: list[str] = []
    first_writer = repo.locks.acquire(exclusive=False)
    pruner = threading.Thread(target=lambda: _hold(repo, True, order, "prune"))
    pruner.start()
    _wait_until(lambda: len(list((repo.root / "locks").glob("*.json"))) == 2)
    writer = threading.Thread(target=lambda: _hold(repo, False, order, "writer"))
    writer.start()
    time.sleep(0.3)
    assert order == []  # both wait: the prune for the first writer, the new writer for the prune
    first_writer.release()
    pruner.join(10)
    writer.join(10)
    assert order == ["prune", "writer"]


def _hold(repo: Repository, exclusive: bool, order: list[str], name: str) -> None:
    with repo.locked(exclusive=exclusive, stop=stop_after(15)):
        order.append(name)
        time.sleep(0.1)


def _wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_held_lock_is_refreshed_and_is_not_taken_over_when_it_outlives_its_ttl(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    other = Repository.open(tmp_path / "repo")
    repo.locks.ttl = other.locks.ttl = 0.6
    with repo.locked(exclusive=True) as lock:
        time.sleep(1.5)  # more than twice the TTL: only refreshes keep it alive
        lock.ensure_held()
        assert [i.id for i in other.locks.live_locks()] == [lock.id]


def test_a_lock_file_names_its_holder_and_is_private(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    with repo.locked(exclusive=False, run_id="run-7") as lock:
        path = repo.root / "locks" / lock.name
        assert path.name == f"{lock.id}.000000.json"  # generation 0 (lock format 2)
        info = json.loads(path.read_text())
        assert path.stat().st_mode & 0o777 == 0o600
        assert (repo.root / "locks").stat().st_mode & 0o777 == 0o700
    assert info["owner"] == socket.gethostname() and info["pid"] == os.getpid()
    assert info["boot_id"] == boot_id() and info["start_time"] == process_start_time(os.getpid())
    assert info["pid_ns"] == pid_namespace() != ""
    assert info["run_id"] == "run-7" and info["exclusive"] is False
    assert datetime.fromisoformat(info["expires"]) > datetime.fromisoformat(info["created"])
    assert not path.exists()


def test_a_prune_whose_lock_was_taken_over_stops_before_deleting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process judged the prune's lock stale (a stalled host, a skewed clock) and
    removed it: the prune must not go on deleting as if it still held it."""
    repo = Repository.open(tmp_path / "repo")
    for i in range(2):
        backup(repo, random_tree(tmp_path / f"s{i}"), f"s{i}", name="s")
    packs = sorted(p.name for p in (repo.root / "packs").glob("*/*.pack"))
    real_snapshots = repo.snapshots

    def snapshots(job: str | None = None) -> Any:
        for path in (repo.root / "locks").glob("*.json"):
            path.unlink()  # as a process that found it "expired" would
        return real_snapshots(job)

    monkeypatch.setattr(repo, "snapshots", snapshots)
    with pytest.raises(RepositoryLockLost, match="no longer held"):
        apply_retention(repo, "s", Retention(keep_last=1))
    assert sorted(p.name for p in (repo.root / "packs").glob("*/*.pack")) == packs
    assert repo.snapshot_exists("s0")


# --- finding 9 (prune part): left-overs ----------------------------------------------------


def test_prune_removes_old_temporary_files_and_packs_without_an_index_and_keeps_young_ones(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(repo, random_tree(tmp_path / "src"), "k0", name="k")
    hour_ago = time.time() - 2 * 3600
    old_tmp, young_tmp = repo.root / "tmp" / "old.pack.tmp", repo.root / "tmp" / "young.pack.tmp"
    old_pack, young_pack = pack_path(repo.root, "ab" + "0" * 30), pack_path(repo.root, "ab" + "1" * 30)
    for path in (old_tmp, young_tmp, old_pack, young_pack):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    for path in (old_tmp, old_pack):
        os.utime(path, (hour_ago, hour_ago))

    result = prune(repo)

    assert result["tmp_removed"] == 1 and result["orphan_packs_removed"] == 1
    assert result["bytes_freed"] >= 2000
    assert not old_tmp.exists() and not old_pack.exists()
    assert young_tmp.exists() and young_pack.exists()
    assert unreadable_chunks(repo.root) == []


def test_retention_with_nothing_to_forget_still_removes_left_overs(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(repo, random_tree(tmp_path / "src"), "k0", name="k")
    leftover = repo.root / "tmp" / ".manifest.json.123.tmp"
    leftover.write_bytes(b"{")
    os.utime(leftover, (0, 0))
    result = apply_retention(repo, "k", Retention(keep_last=3))
    assert result["forgotten"] == [] and result["tmp_removed"] == 1 and not leftover.exists()


# --- stress: two jobs, one pruning, the other publishing --------------------------------------


def test_two_jobs_one_pruning_with_keep_last_1_while_the_other_publishes_lose_no_chunk(tmp_path: Path) -> None:
    """Job `p` backs up and prunes (keep_last=1) in a loop through one Repository object; job
    `w` backs up through another (as a second daemon would), each round reusing the content `p`
    had a round before, which `p`'s prune is deleting meanwhile. Bounded to about 30 s."""
    root = tmp_path / "repo"
    Repository.open(root)
    errors: list[BaseException] = []
    deadline = time.monotonic() + 25
    rounds = {"p": 0, "w": 0}

    def pruner() -> None:
        repo = Repository.open(root)
        src = tmp_path / "p-src"
        try:
            while time.monotonic() < deadline and rounds["p"] < 40:
                random_tree(src, files=2, size=80_000)
                (tmp_path / "p-last").mkdir(exist_ok=True)
                for f in src.iterdir():  # a copy: the next round rewrites src in place
                    (tmp_path / "p-last" / f"{rounds['p']}-{f.name}").write_bytes(f.read_bytes())
                backup(repo, src, f"p{rounds['p']}", name="p")
                apply_retention(repo, "p", Retention(keep_last=1))
                rounds["p"] += 1
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        repo = Repository.open(root)
        try:
            while time.monotonic() < deadline and rounds["w"] < 40:
                src = tmp_path / f"w-src{rounds['w']}"
                random_tree(src, files=1, size=50_000)
                earlier = (
                    sorted((tmp_path / "p-last").glob("*"), key=lambda f: f.stat().st_mtime)[-4:]
                    if (tmp_path / "p-last").exists()
                    else []
                )
                for f in earlier:
                    os.link(f, src / f.name)
                backup(repo, src, f"w{rounds['w']}", name="w")
                rounds["w"] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pruner), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert rounds["p"] >= 3 and rounds["w"] >= 3, rounds
    assert unreadable_chunks(root) == []


def test_a_parent_forgotten_by_a_prune_between_prepare_and_store_is_picked_again(tmp_path: Path) -> None:
    """`prepare` names the parent (the files cache); a prune on another host may forget it before
    `store` takes its lock: the backup then looks again (an older parent, or none) instead of
    failing on a tree that is gone, and publishes a complete snapshot naming the parent it used."""
    repo = Repository.open(tmp_path / "repo")
    source = random_tree(tmp_path / "src")
    for run in ("r0", "r1"):
        work = files_work(repo, source, run, "j")
        ctx = MemoryRunContext(run_id=run)
        work.prepare(ctx)
        work.run(ctx)
    work = files_work(repo, source, "r2", "j")
    ctx = MemoryRunContext(run_id="r2")
    work.prepare(ctx)
    assert work._parent_id() == "r1"
    repo.delete_snapshot("r1")  # what a prune's forget does, between the two steps
    work.run(ctx)
    published = repo.resolve("r2")
    assert published.parent == "r0"
    assert repo.missing_chunks(c for e in read_lines(repo.open_tree(published)) for c in map(bytes.fromhex, e.chunks)) == set()


# --- the publish refreshes its lock only late in the lock's window ------------------------------


@pytest.mark.parametrize(("window_left", "refreshes"), [(None, 0), (10.0, 1)], ids=["lock-just-taken", "late-in-window"])
def test_a_publish_refreshes_its_lock_first_only_when_little_of_the_publish_window_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window_left: float | None, refreshes: int
) -> None:
    """A backup's lock, taken when its store began, has nearly all of its publish window left
    when it publishes: writing a new lock generation then (and deleting it at release) buys
    nothing. With less than TTL/6 left (10 s of a 300 s TTL's 100 s window), it refreshes first,
    so the manifest is still written with a full window. Either way the snapshot is published."""
    repo = Repository.open(tmp_path / "repo")
    refreshed: list[str] = []
    real_refresh = HeldLock.refresh

    def counting(lock: HeldLock) -> None:
        refreshed.append(lock.id)
        real_refresh(lock)

    monkeypatch.setattr(HeldLock, "refresh", counting)
    if window_left is not None:
        monkeypatch.setattr(HeldLock, "time_left", lambda _lock: window_left)
    backup(repo, random_tree(tmp_path / "src"), "r1")
    assert len(refreshed) == refreshes
    assert [s.id for s in Repository.open(repo.root).snapshots()] == ["r1"]

"""The lock protocol on remote storage (issue 17, plan §3): lock ages by the server's clock, a
holder that stops itself when it cannot refresh, append-only refresh by generations, and
credentials that may not delete.

Most scenarios run on `MemoryBackend` (its clock is the *server's* clock, so a test can age a lock
by moving it, and `deny("delete")` is a backup-only credential) through `StorageLockBackend`,
the view of the storage port the repository uses; "hosts" are `RepositoryLocks` objects with
their own hostname and clock. The frozen-writer scenario runs on a real repository directory
with real backups, prunes and threads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.lockobjects import DirectoryLockBackend, LockObject, StorageLockBackend
from davit.adapters.repository.locks import LockInfo, RepositoryLocks
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention
from davit.domain.errors import RepositoryLockLost, RunStopped
from davit.domain.jobs import Retention
from tests.integration.test_files_adapter import backup
from tests.integration.test_repository_locks import random_tree, stop_after, unreadable_chunks

TTL = 300.0


class ServerClock:
    """The storage server's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def host(storage: MemoryBackend, name: str, clock: Any = time.time, ttl: float = TTL, backoff: float = 0.02) -> RepositoryLocks:
    """The locks of one davitd on host `name`, whose wall clock is `clock`."""
    locks = RepositoryLocks(StorageLockBackend(storage), ttl=ttl, clock=clock, first_backoff=backoff, max_backoff=0.1)
    locks.hostname = name
    return locks


def lock_keys(storage: MemoryBackend) -> list[str]:
    return sorted(o.key for o in storage.list("locks/"))


def forge(storage: MemoryBackend, name: str, exclusive: bool = True, expires: str = "9999-12-31T23:59:59+00:00") -> str:
    """A lock object put by someone holding a write credential, claiming to last forever."""
    lock_id = os.urandom(16).hex()
    info = LockInfo(
        id=lock_id,
        owner="mallory-host",
        boot_id="b",
        pid=1,
        start_time=1,
        run_id="",
        exclusive=exclusive,
        created=datetime.now(UTC).isoformat(),
        expires=expires,
        pid_ns="p",
    )
    key = f"locks/{name.format(id=lock_id)}"
    assert storage.put_if_absent(key, info.encode())
    return key


# --- 1. lock ages by the server's clock ---------------------------------------------------------


def test_a_host_whose_clock_runs_ten_minutes_ahead_does_not_take_a_live_lock_of_another_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """By its own clock the backup's lock expired 5 minutes ago; by the server's it was
    written a moment ago. The prune waits (and says once that its clock is off)."""
    storage = MemoryBackend()
    backup_host = host(storage, "host-a")
    prune_host = host(storage, "host-b", clock=lambda: time.time() + 600)
    held = backup_host.acquire(exclusive=False)
    try:
        with caplog.at_level(logging.WARNING, logger="davit.repository.locks"), pytest.raises(RunStopped):
            prune_host.acquire(exclusive=True, stop=stop_after(0.5))
        assert held.name in {k.removeprefix("locks/") for k in lock_keys(storage)}
        held.ensure_held()
        skew = [r.getMessage() for r in caplog.records if "clock is" in r.getMessage()]
        assert len(skew) == 1 and "600 s ahead of the repository server's" in skew[0]
    finally:
        held.release()
    assert lock_keys(storage) == []


@pytest.mark.parametrize("name", ["{id}.000000.json", "{id}.json"], ids=["format 2", "format 1"])
def test_a_forged_lock_expiring_in_the_year_9999_is_taken_over_one_ttl_after_the_server_stored_it(name: str) -> None:
    server = ServerClock()
    storage = MemoryBackend(clock=server)
    forged = forge(storage, name)
    backup_host = host(storage, "host-a")

    with pytest.raises(RunStopped):
        backup_host.acquire(exclusive=False, stop=stop_after(0.3))
    server.now += TTL - 5
    with pytest.raises(RunStopped):
        backup_host.acquire(exclusive=False, stop=stop_after(0.3))
    assert forged in lock_keys(storage)

    server.now += 10  # TTL + 5 s after it was stored, whatever it says of itself
    lock = backup_host.acquire(exclusive=False, stop=stop_after(5))
    assert forged not in lock_keys(storage)
    lock.release()


def test_without_an_own_lock_object_expiry_by_this_hosts_clock_decides_and_nothing_is_removed() -> None:
    """`describe` lists without a lock of its own: it has no server time, so a lock whose
    `expires` passed by this host's clock is left out of the answer, but stays."""
    storage = MemoryBackend()
    held = host(storage, "host-a").acquire(exclusive=False)
    try:
        ahead = host(storage, "host-b", clock=lambda: time.time() + 600)
        assert ahead.describe() == []
        assert [d["id"] for d in host(storage, "host-c").describe()] == [held.id]
        assert held.name in {k.removeprefix("locks/") for k in lock_keys(storage)}
    finally:
        held.release()


# --- 2. the holder stops itself ------------------------------------------------------------------


def test_a_holder_whose_wall_clock_jumped_past_two_thirds_of_the_ttl_counts_its_lock_lost() -> None:
    """A VM suspended and resumed: its monotonic clock did not move, its wall clock did. Others
    may take the lock over by now; every check of the holder refuses."""
    wall = [time.time()]
    storage = MemoryBackend()
    locks = host(storage, "host-a", clock=lambda: wall[0])
    lock = locks.acquire(exclusive=False)
    try:
        lock.check()
        assert lock.ensure_held() > time.monotonic()
        wall[0] += TTL * 2 / 3 + 1
        assert lock.lost
        with pytest.raises(RepositoryLockLost, match="not refreshed for"):
            lock.check()
        with pytest.raises(RepositoryLockLost):
            lock.ensure_held()
        with pytest.raises(RepositoryLockLost):
            locks.check_held()
        objects = lock_keys(storage)
        lock.refresh()  # a lost lock is never refreshed again
        assert lock_keys(storage) == objects
    finally:
        lock.release()
    assert lock_keys(storage) == []


class FreezableLocks(DirectoryLockBackend):
    """The repository's lock directory, whose creates (the refresher's writes) can be made to
    hang, as a process stopped by SIGSTOP or a connection that stalls."""

    def __init__(self, directory: Path, tmp_dir: Path) -> None:
        super().__init__(directory, tmp_dir)
        self.thawed = threading.Event()
        self.thawed.set()

    def create(self, name: str, data: bytes) -> bool:
        self.thawed.wait(30)
        return super().create(name, data)


def test_a_writer_whose_refresher_froze_past_two_thirds_of_the_ttl_never_races_the_prune_that_took_over(
    tmp_path: Path,
) -> None:
    """Writer W holds a shared lock; its refresher hangs. After 2/3 TTL W counts its lock lost;
    after TTL by the server's clock another host's prune takes it over and deletes the packs of
    a forgotten snapshot. In the middle of that prune, W tries to seal a pack and to publish a
    snapshot: both refuse, nothing is published, and every snapshot still verifies."""
    ttl = 1.0
    root = tmp_path / "repo"
    writer = Repository.open(root)
    for i in range(2):
        backup(writer, random_tree(tmp_path / f"a{i}"), f"a{i}", name="a")
    frozen = FreezableLocks(root / "locks", root / "tmp")
    writer.locks = RepositoryLocks(frozen, ttl=ttl)
    pruner = Repository.open(root)
    pruner.locks.hostname = "another-host"
    pruner.locks.ttl = ttl

    mid_prune = threading.Event()
    writer_done = threading.Event()
    real_snapshots = pruner.snapshots

    def snapshots(job: str | None = None) -> Any:
        found = real_snapshots(job)
        if job is None and not mid_prune.is_set():  # the reference scan: the prune holds its lock
            mid_prune.set()
            assert writer_done.wait(20)
        return found

    pruner.snapshots = snapshots  # type: ignore[method-assign]
    outcome: list[Any] = []
    prune = threading.Thread(target=lambda: outcome.append(apply_retention(pruner, "a", Retention(keep_last=1))))
    tree = zstandard.ZstdCompressor().compress(b'{"p": "f", "t": "f", "c": []}\n')
    manifest = {"id": "w0", "job": "w", "kind": "files", "created_at": "2024-01-01T00:00:00+00:00"}

    with writer.locked(exclusive=False) as lock:
        frozen.thawed.clear()
        time.sleep(ttl * 2 / 3 + 0.1)
        assert lock.lost
        prune.start()
        assert mid_prune.wait(20), "the prune did not take over the stale lock"
        pack = writer.new_pack()
        pack.add(b"\x01" * 32, b"stored", 6, 0)
        with pytest.raises(RepositoryLockLost):
            writer.seal_pack(pack)
        pack.abort()
        with pytest.raises(RepositoryLockLost):
            writer.publish_snapshot(manifest, tree)
        writer_done.set()
        prune.join(30)
        frozen.thawed.set()
    assert outcome and outcome[0]["forgotten"] == ["a0"]
    assert not writer.snapshot_exists("w0")
    assert unreadable_chunks(root) == []
    assert list((root / "locks").iterdir()) == []


def test_a_refresh_that_lands_after_two_thirds_of_the_ttl_does_not_count() -> None:
    """The refresher's write hung, then went through: too late to know that nobody took the
    lock meanwhile. The lock is lost, and the late generation is taken away again."""
    storage = MemoryBackend()
    locks = host(storage, "host-a", ttl=0.6)
    lock = locks.acquire(exclusive=False)
    try:
        storage.latency(0.6, ops=["put_if_absent"])
        lock.refresh()
        assert lock.lost and "too late" in (lock.lost_reason or "")
        assert lock_keys(storage) == []  # a lost lock is no lock: its objects are taken away
    finally:
        storage.latency(0)
        lock.release()


# --- 3. the publish window ----------------------------------------------------------------------


def test_ensure_held_gives_a_third_of_the_ttl_from_the_last_refresh_to_start_a_publish() -> None:
    storage = MemoryBackend()
    lock = host(storage, "host-a").acquire(exclusive=False)
    try:
        before = time.monotonic()
        lock.refresh()
        deadline = lock.ensure_held()
        assert before + TTL / 3 - 1 <= deadline <= time.monotonic() + TTL / 3
        assert TTL / 3 - 1 < lock.time_left() <= TTL / 3
    finally:
        lock.release()


# --- 4. append-only refresh ---------------------------------------------------------------------


def test_refreshing_writes_new_generations_never_overwrites_and_leaves_one_live_lock() -> None:
    storage = MemoryBackend()
    lock = host(storage, "host-a").acquire(exclusive=True)
    try:
        for _ in range(5):
            lock.refresh()
        assert storage.counts.total("put") == 0  # no overwrite: a create-only credential suffices
        # the newest generation is the lock; the one before is kept until the next refresh
        assert lock_keys(storage) == [f"locks/{lock.id}.000004.json", f"locks/{lock.id}.000005.json"]
        assert lock.name == f"{lock.id}.000005.json"
        seen = host(storage, "host-b").live_locks()
        assert [(i.id, i.exclusive) for i in seen] == [(lock.id, True)]
        lock.ensure_held()
    finally:
        lock.release()
    assert lock_keys(storage) == []


class ListThenRefresh(StorageLockBackend):
    """A reader's view whose listing is followed, before it reads anything, by `between()`."""

    def __init__(self, storage: MemoryBackend) -> None:
        super().__init__(storage)
        self.between = lambda: None

    def list(self) -> list[LockObject]:
        found = super().list()
        self.between()
        return found


def test_a_lock_refreshed_twice_between_a_readers_listing_and_its_read_is_still_seen() -> None:
    """The generation the reader listed is deleted before it reads it: it must not take the
    lock for gone (the holder created newer ones first), or it would prune under a backup."""
    storage = MemoryBackend()
    holder = host(storage, "host-a").acquire(exclusive=False)
    reader_view = ListThenRefresh(storage)
    reader = RepositoryLocks(reader_view, ttl=TTL, first_backoff=0.02, max_backoff=0.1)
    reader.hostname = "host-b"
    try:
        holder.refresh()  # gens 0 and 1 are present

        def refresh_twice() -> None:
            reader_view.between = lambda: None
            holder.refresh()
            holder.refresh()  # gens 2, 3: 1 is deleted now

        reader_view.between = refresh_twice
        with pytest.raises(RunStopped):
            reader.acquire(exclusive=True, stop=stop_after(0.4))
        assert holder.name == f"{holder.id}.000003.json"
        holder.ensure_held()
    finally:
        holder.release()


def test_a_lock_whose_generation_was_removed_as_stale_is_lost_at_its_next_refresh() -> None:
    storage = MemoryBackend()
    lock = host(storage, "host-a").acquire(exclusive=False)
    try:
        storage.delete(f"locks/{lock.name}")  # as a host that judged it stale does
        lock.refresh()
        assert lock.lost and "removed it as stale" in (lock.lost_reason or "")
        assert lock_keys(storage) == []  # the generation written by that refresh is taken back
        with pytest.raises(RepositoryLockLost):
            lock.check()
    finally:
        lock.release()


# --- write-only credentials -----------------------------------------------------------------------


def test_backups_that_may_not_delete_take_and_release_locks_and_a_prune_that_may_removes_the_debris() -> None:
    server = ServerClock()
    storage = MemoryBackend(clock=server)
    storage.deny("delete")
    first = host(storage, "backup-1")
    second = host(storage, "backup-2")

    lock = first.acquire(exclusive=False)
    lock.refresh()
    lock.refresh()  # nothing may be deleted: three generations
    lock.release()
    assert lock_keys(storage) == [f"locks/{lock.id}.{g:06d}.json" for g in range(3)] + [f"locks/{lock.id}.released"]

    # the released lock blocks nobody, even an exclusive one
    other = second.acquire(exclusive=True, stop=stop_after(5))
    other.release()
    # a backup-only davitd that died holding its lock: never released
    dead = second.acquire(exclusive=False)
    dead._stop.set()  # its refresher is gone with it
    dead._thread.join()
    second.forget(dead)

    storage.allow("delete")  # the maintenance credential
    maintenance = host(storage, "maintenance")
    with pytest.raises(RunStopped):  # the dead one's lock is live until TTL by the server's clock
        maintenance.acquire(exclusive=True, stop=stop_after(0.3))
    server.now += TTL + 1
    prune = maintenance.acquire(exclusive=True, stop=stop_after(5))
    assert lock_keys(storage) == [f"locks/{prune.name}"]
    prune.release()
    assert lock_keys(storage) == []


def test_a_reader_that_may_not_delete_passes_over_a_stale_lock_and_leaves_it() -> None:
    server = ServerClock()
    storage = MemoryBackend(clock=server)
    stale = forge(storage, "{id}.000000.json")
    server.now += TTL + 1
    storage.deny("delete")
    lock = host(storage, "backup-1").acquire(exclusive=False, stop=stop_after(5))
    lock.release()
    assert stale in lock_keys(storage)


# --- exclusion, on the storage port ---------------------------------------------------------------


def test_two_shared_locks_and_one_exclusive_exclude_each_other_on_the_storage_port() -> None:
    storage = MemoryBackend()
    a, b, p = host(storage, "host-a"), host(storage, "host-b"), host(storage, "host-p")
    shared = [a.acquire(exclusive=False, stop=stop_after(5)), b.acquire(exclusive=False, stop=stop_after(5))]
    with pytest.raises(RunStopped):
        p.acquire(exclusive=True, stop=stop_after(0.4))
    for lock in shared:
        lock.release()
    exclusive = p.acquire(exclusive=True, stop=stop_after(5))
    try:
        with pytest.raises(RunStopped):
            a.acquire(exclusive=False, stop=stop_after(0.4))
    finally:
        exclusive.release()
    assert lock_keys(storage) == []


def test_the_lock_objects_of_a_listing_that_are_no_lock_are_passed_over_and_kept() -> None:
    """A listing is hostile input: names that are no lock object block nobody and are never
    deleted (the storage may hold other things under `locks/`)."""
    storage = MemoryBackend()
    for key in ("locks/README", "locks/../x.json", "locks/sub/ab.json", "locks/" + "A" * 32 + ".json"):
        try:
            storage.put_if_absent(key, b"{}")
        except ValueError:
            continue  # the port refuses such keys itself
    before = lock_keys(storage)
    lock = host(storage, "host-a").acquire(exclusive=True, stop=stop_after(5))
    lock.release()
    assert lock_keys(storage) == before


# --- hostile lock objects: parsed, never trusted, never fatal ------------------------------------

_VALID_LOCK = {
    "owner": "mallory-host",
    "boot_id": "b",
    "pid": 1,
    "start_time": 1,
    "exclusive": True,
    "created": "2020-01-01T00:00:00+00:00",
    "expires": "9999-12-31T23:59:59+00:00",
    "pid_ns": "p",
}


def _planted(lock_id: str, **fields: Any) -> bytes:
    return json.dumps({"id": lock_id, **_VALID_LOCK, **fields}).encode().replace(b'"INF"', b"1e400")


@pytest.mark.parametrize(
    "what",
    ["nested 60000 deep", "pid 1e400", "created not a time", "expires not a time"],
)
def test_a_planted_lock_object_that_does_not_parse_stops_nobody(what: str) -> None:
    """Someone with a write credential plants a lock object davit cannot have written: JSON
    nested deeper than Python's recursion limit, a pid of 1e400 (an infinite float), a time that
    does not parse. The first two made every lock taken on the repository raise (RecursionError,
    OverflowError), a bad `created` made an exclusive one raise (ValueError), so no backup,
    prune or `repository check` could run; now such a lock does not parse, is not live, and is
    removed as stale by a holder that may delete."""
    clock = ServerClock()
    storage = MemoryBackend(clock=clock)
    lock_id = os.urandom(16).hex()
    payload = {
        "nested 60000 deep": b"[" * 60000,
        "pid 1e400": _planted(lock_id, pid="INF"),
        "created not a time": _planted(lock_id, created="x"),
        "expires not a time": _planted(lock_id, expires="x"),
    }[what]
    key = f"locks/{lock_id}.000000.json"
    assert storage.put_if_absent(key, payload)
    locks = host(storage, "a")
    assert locks.describe() == []
    for exclusive in (False, True):
        give_up = threading.Event()
        timer = threading.Timer(10.0, give_up.set)  # a lock that parsed would be waited on for good
        timer.start()
        try:
            lock = locks.acquire(exclusive=exclusive, stop=give_up)
        finally:
            timer.cancel()
        lock.release()
    assert key not in lock_keys(storage)


class SlowReads(DirectoryLockBackend):
    """The lock directory, whose reads (the publish's read-back of the lock) can be made slow."""

    def __init__(self, directory: Path, tmp_dir: Path) -> None:
        super().__init__(directory, tmp_dir)
        self.delay = 0.0

    def read(self, name: str) -> bytes | None:
        time.sleep(self.delay)
        return super().read(name)


def test_a_publish_that_skipped_its_refresh_and_then_read_its_lock_slowly_does_not_publish_late(tmp_path: Path) -> None:
    """The lock was refreshed a little under TTL/6 ago, so the publish does not refresh it first
    (`refresh_for_publish`); then the read-back of the lock is slow, past the deadline (last
    refresh + TTL/3). The manifest must not be written then: it could land after another host
    took the lock over. It is refused (`RepositoryLockLost`), and nothing is published."""
    ttl = 3.0
    root = tmp_path / "repo"
    writer = Repository.open(root)
    slow = SlowReads(root / "locks", root / "tmp")
    writer.locks = RepositoryLocks(slow, ttl=ttl)
    tree = zstandard.ZstdCompressor().compress(b'{"p": "f", "t": "f", "c": []}\n')
    manifest = {"id": "late0", "job": "w", "kind": "files", "created_at": "2024-01-01T00:00:00+00:00"}
    with writer.locked(exclusive=False) as lock:
        time.sleep(max(0.0, ttl / 6 - 0.2 - (ttl / 3 - lock.time_left())))  # TTL/6 + 0.2 s of the window left
        assert ttl / 6 < lock.time_left() < ttl / 3
        slow.delay = lock.time_left() + 0.2  # the read-back ends past the deadline
        with pytest.raises(RepositoryLockLost, match="too little time"):
            writer.publish_snapshot(manifest, tree)
        slow.delay = 0.0
    assert not writer.snapshot_exists("late0")

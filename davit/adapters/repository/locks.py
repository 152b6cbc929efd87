"""Repository locks as small objects under `locks/`: shared for writers, exclusive for pruning.

Why objects and not `flock`: the same protocol must hold between davitd processes on other
hosts and on storage that has neither `flock` nor an atomic rename (S3, SFTP). It needs four
primitives (`LockBackend`, in `lockobjects.py`): create-if-absent, a read-after-write consistent
listing giving each object's mtime *by the server's clock*, read, and delete. No overwrite: a
credential that may create but not replace or delete (a backup-only one) can still take locks.

The protocol:
- A lock is an id (128 random bits) whose state is its newest *generation*, the object
  `locks/<id>.<gen:06d>.json`: {id, owner (hostname), boot_id, pid_ns, pid, start_time (the
  pid's start time, so a reused pid is not mistaken for the holder), run_id, exclusive,
  created, expires (UTC, the holder's wall clock)}. `pid_ns` names the pid namespace: two
  containers with one hostname and one kernel (host networking) must not judge each other's
  pids. Names of lock format 1, `locks/<id>.json` (refreshed by overwriting), are still read.
- Shared (store, publish, restore): create own lock, then list. Any other live exclusive lock:
  give own up, back off with jitter, try again.
- Exclusive (prune): create own lock, then list. An exclusive lock created before ours (ties
  broken by id): give own up, back off. Otherwise keep ours and wait until no live shared lock
  is left. Keeping it while waiting makes new shared lockers back off, so a steady stream of
  backups cannot starve a prune (a plain "delete own and retry" would wait for a moment with no
  writer at all, which two busy jobs may never leave). Mutual exclusion holds because each
  side creates before it lists: of a shared and an exclusive lock taken at once, at least one
  lister sees the other (this needs a read-after-write consistent listing, not an exclusive
  create).
- Refresh, every TTL/3 by a daemon thread: create the next generation (create-if-absent), check
  that the previous one is still there (else another process removed the lock as stale: it is
  lost), then delete the generations older than the previous one, if the credential may. The
  previous generation is kept until the next refresh so that a reader which listed it just
  before the refresh still finds the lock when it reads (davit before lock format 2 reads what
  it listed, and passes over what vanished).
- Release: delete every generation; a credential that may not delete creates
  `locks/<id>.released` instead, and the id counts as gone. Whoever may delete removes released
  and stale ids whole; a process that may not just passes over them.
- Staleness. A lock made on this host in this boot (and pid namespace) is stale exactly when its
  process is gone (or the pid now names a process started at another time), whatever its age
  says: a clock stepped forward must not take a lock from a process that is still using it.
  Any other lock is stale when it was not refreshed for TTL *by the server's clock*:
  `server_now - mtime(newest generation) > TTL`, where `server_now` is the server mtime of the
  reader's own lock object, created or refreshed just before (plus the time elapsed since, by
  this host's monotonic and wall clocks, whichever is less), so hosts whose clocks disagree still
  agree on a lock's age, and a forged lock whose `expires` lies in the year 9999 lasts one TTL.
  Without an own lock object (`describe`), `expires` by this host's clock decides, and nothing
  is removed (this host's clock may be the wrong one). A reader whose own lock object is missing
  from its listing counts its lock lost and takes a new one. A reader
  logs once when its clock and the server's differ by more than TTL/10. A lock object that does
  not parse is stale (nothing writes one: creation is atomic with the content).
  A `kill -9`ed davitd's lock is taken over at once on its own host, and after TTL from
  another; no operator action, ever. (A davitd that is alive but stopped, SIGSTOP or stuck in
  the kernel, keeps its lock on its own host, as `flock` would.)
- The holder stops itself. A lock whose last successful refresh was *sent* more than 2/3 TTL
  ago by this host's monotonic clock or by its wall clock (a suspended VM's monotonic clock may
  not advance) is lost: it is never refreshed again, and `HeldLock.check()` (no I/O, call it
  before every write: sealing a pack, uploading staging) and `ensure_held()` (also reads the
  lock back: before each deletion of a prune, before a publish) raise `RepositoryLockLost`. A
  refresh that completes after that limit does not count. Since others may take the lock only
  TTL after its last refresh *reached the server*, which was after it was sent, the holder
  stops at least TTL/3 before anyone else may start (as long as the hosts' clocks run at the
  same rate, whatever they read).
- The publish window. `ensure_held()` returns a deadline on `time.monotonic()`: the last
  successful refresh's send time plus TTL/3. A write that must complete while the lock is held
  (the manifest, which makes a snapshot exist) starts only before it, so it has at least 2/3 TTL
  of the server's clock to land, retries included, before anyone else may take the lock. A
  publish refreshes first only when less than TTL/6 of the window is left (a backup's lock,
  taken when its store began, usually has nearly all of it): one lock object less to write.

Locks are re-entrant per thread and repository: a thread holding any lock on a repository gets
it again at once (publishing inside a store's shared lock, pruning inside retention's
exclusive lock); asking for exclusive while holding shared is a programming error.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from davit.adapters.repository.lockobjects import (
    V1_GEN,
    DirectoryLockBackend,
    LockBackend,
    LockObjects,
    StorageLockBackend,
    gen_name,
    group_by_id,
    released_name,
)
from davit.domain.errors import BackendDenied, BackendUnavailable, RepositoryLockLost, RunStopped, StorageFull

__all__ = ["DirectoryLockBackend", "HeldLock", "LockBackend", "LockInfo", "RepositoryLocks", "StorageLockBackend"]

DEFAULT_TTL = 300.0
LOST_AFTER = 2 / 3  # of the TTL without a successful refresh: the holder counts its lock lost
SAFE_WINDOW = 1 / 3  # of the TTL after a successful refresh: a publish may still start
FRESH_FOR_PUBLISH = 1 / 6  # of the TTL: a lock with this much of its publish window left is not refreshed first
log = logging.getLogger("davit.repository.locks")

# What a refresh or a release may meet and survive: a full disk, a server that does not
# answer, a credential refused an operation. Anything else is a bug and is raised.
_STORAGE_ERRORS = (OSError, StorageFull, BackendUnavailable, BackendDenied)


@dataclass(frozen=True)
class LockInfo:
    id: str
    owner: str
    boot_id: str
    pid: int
    start_time: int
    run_id: str
    exclusive: bool
    created: str
    expires: str
    pid_ns: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @staticmethod
    def decode(data: bytes) -> LockInfo:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        return LockInfo(
            id=str(raw["id"]),
            owner=str(raw["owner"]),
            boot_id=str(raw["boot_id"]),
            pid=int(raw["pid"]),
            start_time=int(raw["start_time"]),
            run_id=str(raw.get("run_id") or ""),
            exclusive=bool(raw["exclusive"]),
            created=str(raw["created"]),
            expires=str(raw["expires"]),
            pid_ns=str(raw.get("pid_ns") or ""),
        )

    def expires_at(self) -> float:
        return _parse_time(self.expires)

    def created_at(self) -> float:
        return _parse_time(self.created)


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> float:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when.timestamp()


# --- who we are, and whether a process on this host still lives ---------------------------------


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        raise
    rest = stat[stat.rfind(")") + 2 :].split()  # the name (field 2) may hold spaces and parentheses
    if rest[0] == "Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(rest[19])  # rest[0] is field 3


# Lock ids this process holds, whatever thread or Repository instance took them: a lock of our
# own pid and start time that is not in here was leaked, and is stale.
_held_ids: set[str] = set()
_held_guard = threading.Lock()
_per_thread = threading.local()

Instant = tuple[float, float]  # (time.monotonic(), the wall clock) at one moment


class HeldLock:
    """A lock this process holds; refreshed by a daemon thread until released or lost.

    For writers: `check()` before each write (cheap: no I/O), `ensure_held()` before a write
    that makes something exist or go away (a manifest, a prune's deletion): it also reads the
    lock back, and returns the monotonic deadline before which such a write may start."""

    def __init__(self, locks: RepositoryLocks, info: LockInfo, sent: Instant, done: Instant) -> None:
        self.locks = locks
        self.info = info
        self.gen = 0  # the newest generation this holder created
        self.lost_reason: str | None = None
        self._next_gen = 1  # never reused, even after a failed attempt: it may have landed
        self._present: set[int] = {0}  # generations that may exist and that we did not delete
        self._ok_sent = sent  # when the write of the newest generation was sent
        self._done: dict[int, Instant] = {0: done}  # when each generation's create returned
        self._mutex = threading.Lock()  # one refresh or release at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name=f"davit-lock-{info.id[:8]}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def exclusive(self) -> bool:
        return self.info.exclusive

    @property
    def name(self) -> str:
        """The name under `locks/` of the lock's newest generation."""
        return gen_name(self.id, self.gen)

    def written_at(self, gen: int) -> Instant | None:
        """When this holder's create of generation `gen` returned (None if unknown)."""
        return self._done.get(gen)

    # --- refreshing ----------------------------------------------------------------------

    def _refresh_loop(self) -> None:
        interval = self.locks.ttl / 3
        while not self._stop.wait(interval):
            if self.lost:
                log.error("repository lock %s in %s is lost: %s", self.id, self.locks.backend.where, self.lost_reason)
                return
            try:
                self.refresh()
                interval = self.locks.ttl / 3
            except _STORAGE_ERRORS as exc:  # the lock is lost once this lasts 2/3 TTL: check() tells
                log.warning("cannot refresh repository lock %s in %s: %s", self.id, self.locks.backend.where, exc)
                interval = self.locks.ttl / 12  # try again soon, before 2/3 TTL is out

    def refresh(self) -> None:
        """Write the next generation. Marks the lock lost (and gives it up) if the previous
        generation is gone or if this refresh came too late to count; raises the backend's
        error if the write fails (the lock is not lost until 2/3 TTL has passed)."""
        if self.lost:  # without the mutex: a refresh stuck in the backend must not hold this up
            return
        with self._mutex:
            if self.lost:
                return
            self._refresh()

    def _refresh(self) -> None:
        locks = self.locks
        gen = self._next_gen
        self._next_gen += 1
        info = replace(self.info, expires=_stamp(locks.clock() + locks.ttl))
        sent = (time.monotonic(), locks.clock())
        self._present.add(gen)  # before the request: an unknown outcome may have created it
        if not locks.backend.create(gen_name(self.id, gen), info.encode()):
            self._present.discard(gen)  # not ours: nothing of davit's writes another's generation
            self._lose(f"its generation {gen} exists already: another process wrote it")
            return
        done = (time.monotonic(), locks.clock())
        self._done[gen] = done
        late = self._overdue(done)
        if late is not None:
            self._lose(f"the refresh came too late: {late}")
            return
        if locks.backend.read(self.name) is None:
            self._lose("another process removed it as stale")
            return
        self.info, self.gen, self._ok_sent = info, gen, sent
        self._drop_old_generations()

    def _drop_old_generations(self) -> None:
        """Delete the generations older than the previous one, if the credential may."""
        for gen in sorted(g for g in self._present if g < self.gen - 1):
            if self.locks.can_delete is False:
                return
            try:
                self.locks.backend.delete(gen_name(self.id, gen))
            except BackendDenied as exc:
                self.locks.deletes_denied(exc)
                return
            except _STORAGE_ERRORS as exc:  # tried again at the next refresh
                log.info("cannot delete an old generation of lock %s: %s", self.id, exc)
                return
            self._present.discard(gen)
            self._done.pop(gen, None)

    # --- losing ------------------------------------------------------------------------------

    def _overdue(self, now: Instant) -> str | None:
        limit = self.locks.ttl * LOST_AFTER
        waited = max(now[0] - self._ok_sent[0], now[1] - self._ok_sent[1])
        if waited > limit:
            return f"not refreshed for {waited:.1f} s (a lock is given up after {limit:.1f} s)"
        return None

    def _lose(self, reason: str) -> None:
        """Count the lock lost for good and take its objects away (it is no lock any more)."""
        self.lost_reason = reason
        log.error("repository lock %s in %s is lost: %s", self.id, self.locks.backend.where, reason)
        try:
            self._withdraw()
        except _STORAGE_ERRORS as exc:  # its objects are stale after TTL anyway
            log.warning("cannot remove lost repository lock %s: %s", self.id, exc)

    @property
    def lost(self) -> bool:
        """Whether the lock is lost: removed by another process, or not refreshed in time (by
        this host's monotonic or wall clock). No I/O; once lost, lost for good."""
        if self.lost_reason is None:
            self.lost_reason = self._overdue((time.monotonic(), self.locks.clock()))
        return self.lost_reason is not None

    def check(self) -> None:
        """`RepositoryLockLost` if the lock is lost; cheap enough to call before every write."""
        if self.lost:
            raise RepositoryLockLost(self.locks.backend.where, self.id, self.lost_reason or "")

    def time_left(self) -> float:
        """Seconds until `ensure_held`'s deadline (negative once it passed)."""
        return self._ok_sent[0] + self.locks.ttl * SAFE_WINDOW - time.monotonic()

    def refresh_for_publish(self) -> None:
        """Refresh before a publish, unless less than TTL/6 of the publish window is gone: a
        lock taken or refreshed moments ago (a backup's, held since its store began) would only
        gain one more lock object to write and later delete. What keeps the publish safe is
        `ensure_held`, whatever this does: it reads the lock back, and its deadline is still
        met with at least TTL/6 to spare, so the write has 2/3 TTL to land as before."""
        if self.time_left() < self.locks.ttl * FRESH_FOR_PUBLISH:
            self.refresh()

    def ensure_held(self) -> float:
        """Raise `RepositoryLockLost` unless the lock is still ours: not lost, and its newest
        generation present and ours. Returns the deadline on `time.monotonic()` (the last
        successful refresh's send time + TTL/3) before which a write that must land under the
        lock may start: it then has at least 2/3 TTL before anyone else may take the lock.
        Call `refresh()` first for a full window (a publish does when less than TTL/6 of it is
        left: `refresh_for_publish`)."""
        self.check()
        where = self.locks.backend.where
        data = self.locks.backend.read(self.name)
        if data is None:
            self.lost_reason = "another process removed it as stale"
            raise RepositoryLockLost(where, self.id, self.lost_reason)
        try:
            stored = LockInfo.decode(data)
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            raise RepositoryLockLost(where, self.id, "its lock object no longer parses") from None
        if stored.id != self.id:
            raise RepositoryLockLost(where, self.id, "its lock object holds another lock")
        self.check()  # the read may have taken long
        return self._ok_sent[0] + self.locks.ttl * SAFE_WINDOW

    # --- releasing ---------------------------------------------------------------------------

    def _withdraw(self) -> None:
        """Delete every generation that may exist; where deleting is refused, mark the id released."""
        for gen in sorted(self._present, reverse=True):
            if self.locks.can_delete is False:
                break
            try:
                self.locks.backend.delete(gen_name(self.id, gen))
            except BackendDenied as exc:
                self.locks.deletes_denied(exc)
                break
            self._present.discard(gen)
        if self._present:
            marker = json.dumps({"id": self.id, "released": _stamp(self.locks.clock())}).encode()
            self.locks.backend.create(released_name(self.id), marker)
            self._present.clear()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            with self._mutex:
                self._withdraw()
        finally:
            self.locks.forget(self)


class RepositoryLocks:
    """Takes shared and exclusive locks on one repository through a `LockBackend`."""

    def __init__(
        self,
        backend: LockBackend,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        first_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.backend = backend
        self.ttl = ttl
        self.clock = clock
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.hostname = socket.gethostname()
        self.boot_id = boot_id()
        self.pid_ns = pid_namespace()
        self.pid = os.getpid()
        self.start_time = process_start_time(self.pid) or 0
        # None until a delete is refused: then False, and stale or released ids are passed over
        self.can_delete: bool | None = None
        self._mine: dict[str, HeldLock] = {}  # the locks this object holds or is acquiring
        self._mine_guard = threading.Lock()
        self._skew_warned = False

    # --- holding ---------------------------------------------------------------------------

    def _thread_held(self) -> dict[str, HeldLock]:
        held: dict[str, HeldLock] | None = getattr(_per_thread, "held", None)
        if held is None:
            held = _per_thread.held = {}
        return held

    @contextmanager
    def hold(
        self, exclusive: bool, stop: threading.Event | None = None, run_id: str | None = None
    ) -> Iterator[tuple[HeldLock, bool]]:
        """The lock, and whether it was newly taken (False when this thread already held it)."""
        held = self._thread_held()
        current = held.get(self.backend.where)
        if current is not None:
            if exclusive and not current.exclusive:
                raise RuntimeError(f"{self.backend.where}: exclusive lock asked for while holding a shared one")
            yield current, False
            return
        lock = self.acquire(exclusive, stop, run_id)
        held[self.backend.where] = lock
        try:
            yield lock, True
        finally:
            del held[self.backend.where]
            lock.release()

    def current(self) -> HeldLock | None:
        """The lock this thread holds on this repository (through `hold`), if any."""
        return self._thread_held().get(self.backend.where)

    def check_held(self) -> None:
        """`RepositoryLockLost` if any lock taken through this object is lost. For writers that
        do not have the lock at hand (a pack sealed on a worker thread): cheap, no I/O."""
        with self._mine_guard:
            mine = list(self._mine.values())
        for lock in mine:
            lock.check()

    def forget(self, lock: HeldLock) -> None:
        """`lock` is released: it is no longer ours."""
        with self._mine_guard:
            self._mine.pop(lock.id, None)
        with _held_guard:
            _held_ids.discard(lock.id)

    def deletes_denied(self, exc: BackendDenied) -> None:
        if self.can_delete is not False:
            self.can_delete = False
            log.warning(
                "%s: this credential may not delete lock objects (%s): released locks are marked as such, "
                "and stale ones are left for a process that may delete (a prune)",
                self.backend.where,
                exc,
            )

    def acquire(self, exclusive: bool, stop: threading.Event | None = None, run_id: str | None = None) -> HeldLock:
        delay = self.first_backoff
        while True:
            _check_stop(stop)
            lock = self._create(exclusive, run_id)
            try:
                if self._wait_for_turn(lock, stop):
                    return lock
            except BaseException:
                lock.release()
                raise
            lock.release()
            _pause(stop, delay)
            # Jitter breaks the tie between two that keep colliding. Without the right to
            # delete, each round leaves two objects behind until a prune removes them: fewer.
            cap = self.max_backoff if self.can_delete is not False else max(self.max_backoff, self.ttl / 10)
            delay = min(delay * 2, cap)

    def _create(self, exclusive: bool, run_id: str | None) -> HeldLock:
        while True:
            now = self.clock()
            info = LockInfo(
                id=os.urandom(16).hex(),
                owner=self.hostname,
                boot_id=self.boot_id,
                pid=self.pid,
                start_time=self.start_time,
                run_id=run_id or "",
                exclusive=exclusive,
                created=_stamp(now),
                expires=_stamp(now + self.ttl),
                pid_ns=self.pid_ns,
            )
            # Registered before it exists: another thread of ours listing meanwhile must not
            # take it for a lock this process left behind.
            with _held_guard:
                _held_ids.add(info.id)
            sent = (time.monotonic(), self.clock())
            try:
                created = self.backend.create(gen_name(info.id, 0), info.encode())
            except BaseException:
                with _held_guard:
                    _held_ids.discard(info.id)
                raise
            if created:
                lock = HeldLock(self, info, sent, (time.monotonic(), self.clock()))
                with self._mine_guard:
                    self._mine[info.id] = lock
                return lock
            with _held_guard:
                _held_ids.discard(info.id)

    def _wait_for_turn(self, lock: HeldLock, stop: threading.Event | None) -> bool:
        """True once `lock` may be used; False if it must be given up and taken again later."""
        mine = (lock.info.created_at(), lock.id)
        delay = self.first_backoff
        while True:
            others = self.live_locks(exclude=lock.id)
            if lock.lost:  # not refreshed while waiting, or gone from the listing: take a new one
                return False
            if not lock.exclusive:
                return not any(o.exclusive for o in others)
            if any(o.exclusive and (o.created_at(), o.id) < mine for o in others):
                return False
            if not any(not o.exclusive for o in others):
                return True  # exclusives created after ours back off when they see it
            _check_stop(stop)
            _pause(stop, delay)
            delay = min(delay * 2, self.max_backoff)

    # --- looking at the others --------------------------------------------------------------

    def live_locks(self, exclude: str | None = None) -> list[LockInfo]:
        """Every lock present that is not stale, but `exclude` (the caller's own: its object's
        server mtime gives the server's time). Stale and released ones are removed on the way
        if this credential may delete, passed over otherwise."""
        groups = group_by_id(self.backend.list())
        own = groups.pop(exclude, None) if exclude is not None else None
        mine = self._mine.get(exclude) if exclude is not None else None
        if mine is not None and (own is None or not own.gens):
            # Created before this listing, yet not in it: another process removed it as stale
            # (or the listing is not consistent). Either way, this lock protects nothing.
            mine.lost_reason = mine.lost_reason or "its lock object is gone from the listing"
        server_now = self._server_now(own)
        live = []
        for group in groups.values():
            info = self._judge(group, server_now)
            if info is not None:
                live.append(info)
        return live

    def _server_now(self, own: LockObjects | None) -> float | None:
        """The server's time now, from the mtime of our own newest generation in the listing and
        the time passed since its create returned (the lesser by our monotonic and wall clocks:
        it is never more than the server's time, so no live lock is taken for stale)."""
        lock = self._mine.get(own.id) if own is not None else None
        if own is None or lock is None:
            return None
        # the newest generation whose create came back (one with an unknown outcome has no time)
        known = [g for g in own.gens if lock.written_at(g) is not None]
        if not known:
            return None
        done = lock.written_at(max(known))
        assert done is not None
        mtime = own.gens[max(known)]
        skew = done[1] - mtime
        if abs(skew) > self.ttl / 10 and not self._skew_warned:
            self._skew_warned = True
            log.warning(
                "%s: this host's clock is %.0f s %s the repository server's; lock ages are taken by the server's",
                self.backend.where,
                abs(skew),
                "ahead of" if skew > 0 else "behind",
            )
        elapsed = max(0.0, min(time.monotonic() - done[0], self.clock() - done[1]))
        return mtime + elapsed

    def _judge(self, group: LockObjects, server_now: float | None) -> LockInfo | None:
        """The lock `group` holds if it is live; None (and the objects removed, if we may) if not."""
        if group.released or group.newest is None:
            if server_now is not None:
                self._remove(group)  # debris of a holder that could not delete
            return None
        data, mtime = self._read_state(group)
        if data is None:
            return None  # released or removed since the listing
        info = _decode_for(group.id, data)
        if mtime is None:
            mtime = server_now  # written since the listing: as young as can be
        reason = "it does not parse" if info is None else self.stale_reason(info, mtime, server_now)
        if reason is None:
            return info
        # Judged by `expires` alone (no own object gave the server's time), a lock is only
        # left out, never removed: this host's clock may be the one that is wrong.
        if self.can_delete is not False and server_now is not None:
            log.warning("removing stale repository lock %s in %s: %s", group.id, self.backend.where, reason)
            self._remove(group)
        return None

    def _read_state(self, group: LockObjects) -> tuple[bytes | None, float | None]:
        """The newest generation's bytes and mtime. If it vanished since the listing, its holder
        may have refreshed twice meanwhile (it deletes a generation only once two newer exist):
        the next ones are tried, and one found is as young as can be (mtime None)."""
        newest = group.newest
        assert newest is not None
        data = self.backend.read(gen_name(group.id, newest))
        if data is not None:
            return data, group.gens[newest]
        if newest == V1_GEN:
            return None, None
        for gen in range(newest + 1, newest + 4):
            data = self.backend.read(gen_name(group.id, gen))
            if data is not None:
                return data, None
        return None, None

    def _remove(self, group: LockObjects) -> None:
        for name in group.names():
            if self.can_delete is False:
                return
            try:
                self.backend.delete(name)
            except BackendDenied as exc:
                self.deletes_denied(exc)
                return

    def stale_reason(self, info: LockInfo, mtime: float | None = None, server_now: float | None = None) -> str | None:
        """Why the lock `info` (whose newest object has server `mtime`) is stale, or None if it
        is live; `server_now` is the server's time now (None if unknown: `expires` decides)."""
        if (
            (info.owner, info.boot_id, info.pid_ns) != (self.hostname, self.boot_id, self.pid_ns)
            or not info.boot_id
            or not info.pid_ns
        ):
            return self._foreign_stale_reason(info, mtime, server_now)
        # This host, boot and pid namespace: whether the holder lives is known, and decides
        # whatever the expiry says. A wall clock stepped forward (a VM resumed, NTP) makes every
        # lock look expired until its next refresh; its process still relies on it.
        if info.pid == self.pid and info.start_time == self.start_time:
            with _held_guard:
                return None if info.id in _held_ids else "left behind by this process"
        started = process_start_time(info.pid)
        if started is None:
            return f"process {info.pid} on {info.owner} is gone"
        if started != info.start_time:
            return f"process {info.pid} on {info.owner} is another process now"
        return None

    def _foreign_stale_reason(self, info: LockInfo, mtime: float | None, server_now: float | None) -> str | None:
        """Another host, boot or pid namespace: only the lock's age tells, by the server's clock
        when known (the holder's `expires` is its own word, and its clock may be off or forged)."""
        if mtime is not None and server_now is not None:
            age = server_now - mtime
            if age > self.ttl:
                return f"not refreshed for {age:.0f} s by the repository server's clock (TTL {self.ttl:.0f} s)"
            return None
        try:
            return f"expired at {info.expires}" if info.expires_at() < self.clock() else None
        except ValueError:
            return "its expiry does not parse"

    def describe(self) -> list[dict[str, Any]]:
        """The live locks, for an operator."""
        return [asdict(i) for i in self.live_locks()]


def _decode_for(lock_id: str, data: bytes) -> LockInfo | None:
    """The lock in `data` if it parses and is the lock `lock_id` its name says. A lock object is
    hostile input: JSON nested too deep (RecursionError), a pid of 1e400 (OverflowError) or a
    time that does not parse must read as "does not parse", not stop every lock taken here."""
    try:
        info = LockInfo.decode(data)
        info.created_at(), info.expires_at()  # compared while waiting: they must parse now
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None
    return info if info.id == lock_id else None


def _pause(stop: threading.Event | None, delay: float) -> None:
    if stop is not None:
        stop.wait(delay * random.uniform(0.5, 1.5))
    else:
        time.sleep(delay * random.uniform(0.5, 1.5))


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise RunStopped("stopped while waiting for the repository lock")

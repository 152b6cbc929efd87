"""Repository locks as small objects under `locks/`: shared for writers, exclusive for pruning.

Why objects and not `flock`: the same protocol must hold between davitd processes on other
hosts and on storage that has neither `flock` nor an atomic rename (S3, SFTP). It needs only
five primitives (`LockBackend`): create-if-absent, list, read, overwrite-if-present, delete.
They are a view of the `locks/` prefix of the repository's storage port (`ObjectLockBackend`):
locally a hard link of a fsynced temporary file (exclusive and atomic with its content) and
plain unlink/rename; on S3 create-if-absent is a PUT with `If-None-Match: *`.

The protocol:
- A lock is `locks/<random id>.json`: {id, owner (hostname), boot_id, pid_ns, pid, start_time
  (the pid's start time, so a reused pid is not mistaken for the holder), run_id, exclusive,
  created, expires (UTC, wall clock)}. `pid_ns` names the pid namespace: two containers with
  one hostname and one kernel (host networking) must not judge each other's pids.
- Shared (store, publish, restore): create own lock, then list. Any other live exclusive lock:
  delete own, back off with jitter, try again.
- Exclusive (prune): create own lock, then list. An exclusive lock created before ours (ties
  broken by id): delete own, back off. Otherwise keep ours and wait until no live shared lock
  is left. Keeping it while waiting makes new shared lockers back off, so a steady stream of
  backups cannot starve a prune (a plain "delete own and retry" would wait for a moment with no
  writer at all, which two busy jobs may never leave). Mutual exclusion holds because each
  side creates before it lists: of a shared and an exclusive lock taken at once, at least one
  lister sees the other.
- A held lock is refreshed (its `expires` rewritten) every TTL/3 by a daemon thread.
- A lock made on this host in this boot (and pid namespace) is stale exactly when its process
  is gone (or the pid now names a process started at another time), whatever its expiry says:
  a clock stepped forward must not take a lock from a process that is still using it. Any
  other lock is stale when it expired by the reader's clock.
  Whoever finds a stale lock deletes it: a `kill -9`ed davitd's lock is taken over at once on
  its own host, and after TTL from another; no operator action, ever. (A davitd that is alive
  but stopped, SIGSTOP or stuck in the kernel, keeps its lock on its own host, as `flock` would.) A lock file that does not
  parse is stale too (nothing writes one: creation is atomic with the content).
- The exclusive holder calls `HeldLock.ensure_held()` before each deletion: its lock must
  still exist and have at least TTL/3 left; otherwise `RepositoryLockLost` stops the prune.
  This assumes the clocks of hosts sharing a repository agree within a margin well under TTL/3
  (100 s by default): a host whose clock runs ahead by more could take a live lock as expired.

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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge
from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.fsutil import NotRegularFile
from davit.domain.errors import RepositoryLockLost, RunStopped, StorageFull

DEFAULT_TTL = 300.0
log = logging.getLogger("davit.repository.locks")


class LockBackend(Protocol):
    """The five operations the protocol needs from a storage backend."""

    where: str  # names the repository in messages

    def create(self, name: str, data: bytes) -> bool:
        """Create `name` holding `data` if no object of that name exists; False if one does."""

    def names(self) -> list[str]:
        """The lock objects now present."""

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None if it is gone."""

    def overwrite(self, name: str, data: bytes) -> bool:
        """Replace `name`'s bytes if it still exists; False if it is gone."""

    def delete(self, name: str) -> None:
        """Remove `name`; no error if it is already gone."""


class ObjectLockBackend:
    """The lock objects of a repository: the `locks/` prefix of its storage port."""

    PREFIX = "locks/"
    MAX_BYTES = 1 << 16  # a lock object is a few hundred bytes

    def __init__(self, backend: Backend) -> None:
        self.objects = backend
        self.where = backend.where

    def create(self, name: str, data: bytes) -> bool:
        return self.objects.put_if_absent(self.PREFIX + name, data)

    def names(self) -> list[str]:
        found = []
        for info in self.objects.list(self.PREFIX):
            name = info.key[len(self.PREFIX) :]
            if "/" not in name and name.endswith(".json"):
                found.append(name)
        return sorted(found)

    def read(self, name: str) -> bytes | None:
        # Only a regular file is a lock (creation links one): a directory, symlink or FIFO of
        # that name in a local repository is passed over (the listing leaves them out; this is
        # for one planted in between), or one stray entry would stop (or hang, for a FIFO's
        # open) every lock taken on this repository.
        try:
            return self.objects.get(self.PREFIX + name, max_bytes=self.MAX_BYTES)
        except ObjectMissing:
            return None
        except ObjectTooLarge:
            return b""  # nothing davit writes: it does not parse, so it is stale
        except NotRegularFile:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def overwrite(self, name: str, data: bytes) -> bool:
        # Check, then replace: a lock deleted as stale in the instant between the two comes back
        # (there is no compare-and-swap on a local file system; S3 has If-Match). The holder
        # only loses it by missing refreshes for 2/3 of TTL, and ensure_held stops a prune then.
        if self.objects.stat(self.PREFIX + name) is None:
            return False
        self.objects.put(self.PREFIX + name, data)
        return True

    def delete(self, name: str) -> None:
        self.objects.delete(self.PREFIX + name)


class DirectoryLockBackend(ObjectLockBackend):
    """The lock objects of the local repository holding `directory` (its `locks/`)."""

    def __init__(self, directory: Path, tmp_dir: Path | None = None) -> None:
        super().__init__(LocalBackend(directory.parent))
        self.directory = directory


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

    @property
    def name(self) -> str:
        return f"{self.id}.json"

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


class HeldLock:
    """A lock this process holds; refreshed by a daemon thread until released."""

    def __init__(self, locks: RepositoryLocks, info: LockInfo) -> None:
        self.locks = locks
        self.info = info
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name=f"davit-lock-{info.id[:8]}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def exclusive(self) -> bool:
        return self.info.exclusive

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.locks.ttl / 3):
            try:
                self.refresh()
            except (OSError, StorageFull) as exc:  # a full or failing disk: ensure_held notices the expiry nearing
                log.warning("cannot refresh repository lock %s in %s: %s", self.id, self.locks.backend.where, exc)

    def refresh(self) -> None:
        info = LockInfo(**{**asdict(self.info), "expires": _stamp(self.locks.clock() + self.locks.ttl)})
        if self.locks.backend.overwrite(info.name, info.encode()):
            self.info = info
        elif self.lost_reason is None:
            self.lost_reason = "another process removed it as stale"

    def ensure_held(self) -> None:
        """Raise `RepositoryLockLost` unless the lock is still ours with a third of TTL left."""
        where = self.locks.backend.where
        if self.lost_reason is not None:
            raise RepositoryLockLost(where, self.id, self.lost_reason)
        data = self.locks.backend.read(self.info.name)
        if data is None:
            self.lost_reason = "another process removed it as stale"
            raise RepositoryLockLost(where, self.id, self.lost_reason)
        try:
            stored = LockInfo.decode(data)
            left = stored.expires_at() - self.locks.clock()
        except (ValueError, KeyError, TypeError):
            raise RepositoryLockLost(where, self.id, "its lock file no longer parses") from None
        if stored.id != self.id:
            raise RepositoryLockLost(where, self.id, "its lock file holds another lock")
        if left < self.locks.ttl / 3:
            raise RepositoryLockLost(where, self.id, f"not refreshed: {left:.0f} s left of {self.locks.ttl:.0f} s")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.locks.backend.delete(self.info.name)
        finally:
            with _held_guard:
                _held_ids.discard(self.id)


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
            # Jitter breaks the tie between two that keep colliding.
            if stop is not None:
                stop.wait(delay * random.uniform(0.5, 1.5))
            else:
                time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_backoff)

    def _create(self, exclusive: bool, run_id: str | None) -> HeldLock:
        now = self.clock()
        while True:
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
            try:
                created = self.backend.create(info.name, info.encode())
            except BaseException:
                with _held_guard:
                    _held_ids.discard(info.id)
                raise
            if created:
                return HeldLock(self, info)
            with _held_guard:
                _held_ids.discard(info.id)

    def _wait_for_turn(self, lock: HeldLock, stop: threading.Event | None) -> bool:
        """True once `lock` may be used; False if it must be given up and taken again later."""
        mine = (lock.info.created_at(), lock.id)
        delay = self.first_backoff
        while True:
            others = self.live_locks(exclude=lock.id)
            if not lock.exclusive:
                return not any(o.exclusive for o in others)
            if any(o.exclusive and (o.created_at(), o.id) < mine for o in others):
                return False
            if not any(not o.exclusive for o in others):
                return True  # exclusives created after ours back off when they see it
            _check_stop(stop)
            if stop is not None:
                stop.wait(delay * random.uniform(0.5, 1.5))
            else:
                time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_backoff)

    # --- looking at the others --------------------------------------------------------------

    def live_locks(self, exclude: str | None = None) -> list[LockInfo]:
        """Every lock present that is not stale; stale ones are removed on the way."""
        live = []
        for name in self.backend.names():
            if exclude is not None and name == f"{exclude}.json":
                continue
            data = self.backend.read(name)
            if data is None:
                continue
            try:
                info: LockInfo | None = LockInfo.decode(data)
            except (ValueError, KeyError, TypeError):
                info = None
            reason = "it does not parse" if info is None else self.stale_reason(info)
            if reason is None and info is not None:
                live.append(info)
                continue
            log.warning("removing stale repository lock %s in %s: %s", name, self.backend.where, reason)
            self.backend.delete(name)
        return live

    def stale_reason(self, info: LockInfo) -> str | None:
        if (
            (info.owner, info.boot_id, info.pid_ns) != (self.hostname, self.boot_id, self.pid_ns)
            or not info.boot_id
            or not info.pid_ns
        ):
            # another host, boot or pid namespace: only expiry tells
            try:
                return f"expired at {info.expires}" if info.expires_at() < self.clock() else None
            except ValueError:
                return "its expiry does not parse"
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

    def describe(self) -> list[dict[str, Any]]:
        """The live locks, for an operator."""
        return [asdict(i) for i in self.live_locks()]


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise RunStopped("stopped while waiting for the repository lock")

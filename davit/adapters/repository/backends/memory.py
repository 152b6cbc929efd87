"""A repository held in memory, with faults on demand: the fake for unit tests of the repository.

It passes the same contract suite as the real backends (`tests/contract/`), so code tested on
it behaves the same on a directory, SFTP or S3. What a real server does to you, it can do on
request, without sleeps or servers:
- `tear(key)`: the next upload of that key (or of any key under a prefix ending in `/`) breaks
  off: it raises `BackendUnavailable` and the object never appears. With `after_store=True` the
  object *is* stored and the call still raises, as when a connection drops after the server
  committed the PUT: the caller cannot know the outcome and must find out.
- `unavailable(seconds=|calls=)`: requests raise `BackendUnavailable` until the backend's clock
  has advanced that far, or for that many calls, or until `available()`.
- `deny("delete", ...)`: those operations raise `BackendDenied`, as with a backup-only credential.
- `latency(seconds)`: every request (or those named) sleeps first, outside the lock.
- `counts`: requests per (operation, top-level prefix), as `CountingBackend` keeps them.

The clock is injectable and is the *server's* clock: objects get their mtime from it, so a test
can age a lock or a pack by moving it. A call with an invalid key is refused before it is
counted or faulted, as a real backend refuses it before any request.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from davit.adapters.repository.backend import (
    BackendDenied,
    BackendUnavailable,
    Caps,
    ObjectInfo,
    ObjectMissing,
    ObjectTooLarge,
    Source,
    check_key,
    check_prefix,
)
from davit.adapters.repository.backends.counting import OpCounts
from davit.adapters.repository.fsutil import open_new

OPERATIONS = frozenset({"put_if_absent", "put", "get", "get_to", "get_range", "get_ranges", "list", "stat", "delete"})
UPLOADS = frozenset({"put_if_absent", "put"})


@dataclass(frozen=True)
class _Object:
    data: bytes
    mtime: float


@dataclass
class _Tear:
    target: str  # a key, or a prefix ending in "/"
    after_store: bool
    times: int

    def matches(self, key: str) -> bool:
        return key == self.target or (self.target.endswith("/") and key.startswith(self.target))


@dataclass
class _Outage:
    until: float | None  # by the backend's clock
    calls: int | None  # failing calls left
    ops: frozenset[str]


def _ops(ops: Iterable[str] | None) -> frozenset[str]:
    chosen = OPERATIONS if ops is None else frozenset(ops)
    unknown = chosen - OPERATIONS
    if unknown:
        raise ValueError(f"no such backend operation: {sorted(unknown)}")
    return chosen


class MemoryBackend:
    def __init__(
        self,
        where: str = "memory://repository",
        *,
        clock: Callable[[], float] = time.time,
        caps: Caps | None = None,
    ) -> None:
        self.where = where
        self.caps = caps if caps is not None else Caps(conditional_create=True, can_delete=True, local_root=None)
        self.clock = clock
        self.counts = OpCounts()
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}
        self._denied: dict[str, str] = {}
        self._tears: list[_Tear] = []
        self._outage: _Outage | None = None
        self._latency: tuple[float, frozenset[str]] = (0.0, frozenset())

    # --- faults ----------------------------------------------------------------------------

    def deny(self, *ops: str, reason: str = "the credential may not (injected)") -> None:
        """Refuse these operations with `BackendDenied` from now on."""
        with self._lock:
            self._denied.update(dict.fromkeys(_ops(ops), reason))

    def allow(self, *ops: str) -> None:
        with self._lock:
            for op in _ops(ops):
                self._denied.pop(op, None)

    def tear(self, target: str, *, after_store: bool = False, times: int = 1) -> None:
        """Break off the next `times` uploads of `target` (a key, or a prefix ending in `/`)."""
        if target.endswith("/"):
            check_prefix(target)
        else:
            check_key(target)
        with self._lock:
            self._tears.append(_Tear(target, after_store, times))

    def unavailable(self, *, seconds: float | None = None, calls: int | None = None, ops: Iterable[str] | None = None) -> None:
        """Fail requests (of `ops`, or all) with `BackendUnavailable` for `seconds` of the
        backend's clock, or for `calls` requests, or (neither given) until `available()`."""
        until = None if seconds is None else self.clock() + seconds
        with self._lock:
            self._outage = _Outage(until, calls, _ops(ops))

    def available(self) -> None:
        with self._lock:
            self._outage = None

    def latency(self, seconds: float, ops: Iterable[str] | None = None) -> None:
        """Sleep `seconds` before each request of `ops` (or all); 0 turns it off."""
        with self._lock:
            self._latency = (seconds, _ops(ops))

    def _request(self, op: str, key: str) -> None:
        """Count one request and apply the faults that strike before the server acts."""
        self.counts.add(op, key)
        delay, slow_ops = self._latency
        if delay and op in slow_ops:
            time.sleep(delay)
        with self._lock:
            if self._outage_strikes(op):
                raise BackendUnavailable(self.where, op, "the server does not answer (injected)")
            if op in self._denied:
                raise BackendDenied(self.where, op, self._denied[op])

    def _outage_strikes(self, op: str) -> bool:
        outage = self._outage
        if outage is None or op not in outage.ops:
            return False
        if outage.until is not None and self.clock() >= outage.until:
            self._outage = None
            return False
        if outage.calls is not None:
            if outage.calls <= 0:
                self._outage = None
                return False
            outage.calls -= 1
        return True

    def _take_tear(self, key: str) -> _Tear | None:
        with self._lock:
            for tear in self._tears:
                if tear.matches(key):
                    tear.times -= 1
                    if tear.times <= 0:
                        self._tears.remove(tear)
                    return tear
        return None

    # --- writing ---------------------------------------------------------------------------

    def _upload(self, op: str, key: str, src: Source, store: Callable[[bytes], bool]) -> bool:
        check_key(key)
        self._request(op, key)
        data = src.read_bytes() if isinstance(src, Path) else bytes(src)
        tear = self._take_tear(key)
        if tear is not None and not tear.after_store:
            raise BackendUnavailable(self.where, op, f"the connection broke during the upload of {key} (injected)")
        with self._lock:
            created = store(data)
        if tear is not None:
            raise BackendUnavailable(self.where, op, f"the connection broke after the upload of {key} (injected)")
        return created

    def put_if_absent(self, key: str, src: Source) -> bool:
        def create(data: bytes) -> bool:
            if key in self._objects:
                return False
            self._objects[key] = _Object(data, self.clock())
            return True

        return self._upload("put_if_absent", key, src, create)

    def put(self, key: str, src: Source) -> None:
        def replace(data: bytes) -> bool:
            self._objects[key] = _Object(data, self.clock())
            return True

        self._upload("put", key, src, replace)

    # --- reading ---------------------------------------------------------------------------

    def _read(self, op: str, key: str) -> bytes:
        check_key(key)
        self._request(op, key)
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise ObjectMissing(self.where, key)
        return obj.data

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        data = self._read("get", key)
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(self.where, key, len(data), max_bytes)
        return data

    def get_to(self, key: str, dst: Path) -> None:
        data = self._read("get_to", key)
        tmp = dst.with_name(f".{dst.name}.{os.urandom(4).hex()}.tmp")
        try:
            with open(open_new(tmp), "wb") as out:
                out.write(data)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._read("get_range", key)[offset : offset + length]

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        data = self._read("get_ranges", key)
        return [data[offset : offset + length] for offset, length in ranges]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # the request is made (and counted, and may fail) when asked for, like a first page
        check_prefix(prefix)
        self._request("list", prefix)
        with self._lock:
            found = [ObjectInfo(k, len(o.data), o.mtime) for k, o in self._objects.items() if k.startswith(prefix)]
        return iter(found)

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        self._request("stat", key)
        with self._lock:
            obj = self._objects.get(key)
        return None if obj is None else ObjectInfo(key, len(obj.data), obj.mtime)

    # --- removing --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        check_key(key)
        self._request("delete", key)
        with self._lock:
            self._objects.pop(key, None)

    def close(self) -> None:
        """Nothing to release; the objects stay readable through another reference."""

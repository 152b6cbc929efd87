"""How many requests the repository makes of its backend, per operation and top-level prefix.

A remote repository is paid for in round trips, so the plan's performance promises are counts:
"an unchanged second backup lists `index/` once and reads no tree". `CountingBackend` wraps any
backend and counts every call it forwards; `MemoryBackend` keeps the same `OpCounts` itself.
A call is counted when it is made, whether it then succeeds or fails (a failed request was still
a round trip), and a listing is counted once however many objects it yields.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from davit.adapters.repository.backend import Backend, Caps, ObjectInfo, Source


def area(key_or_prefix: str) -> str:
    """The top-level part a request is counted under: `index/` for `index/ab.idx` and for a
    listing of `index/` or `index/sub/`, `config.json` for that key, "" for the whole repository."""
    head, slash, _ = key_or_prefix.partition("/")
    return head + slash


class OpCounts:
    """A thread-safe tally of (operation, area) -> calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, op: str, key_or_prefix: str) -> None:
        with self._lock:
            self._counts[(op, area(key_or_prefix))] += 1

    def __getitem__(self, op_area: tuple[str, str]) -> int:
        """Calls of `op` under `area`, e.g. `counts["list", "index/"]`."""
        with self._lock:
            return self._counts[op_area]

    def total(self, op: str | None = None, under: str | None = None) -> int:
        """Calls of one operation (or all), under one area (or all)."""
        with self._lock:
            return sum(n for (o, a), n in self._counts.items() if op in (None, o) and under in (None, a))

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class CountingBackend:
    """`inner`, with every request counted in `counts`."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.counts = OpCounts()

    @property
    def where(self) -> str:
        return self.inner.where

    @property
    def caps(self) -> Caps:
        return self.inner.caps

    def put_if_absent(self, key: str, src: Source) -> bool:
        self.counts.add("put_if_absent", key)
        return self.inner.put_if_absent(key, src)

    def put(self, key: str, src: Source) -> None:
        self.counts.add("put", key)
        self.inner.put(key, src)

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        self.counts.add("get", key)
        return self.inner.get(key, max_bytes)

    def get_to(self, key: str, dst: Path) -> None:
        self.counts.add("get_to", key)
        self.inner.get_to(key, dst)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.counts.add("get_range", key)
        return self.inner.get_range(key, offset, length)

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.counts.add("get_ranges", key)
        return self.inner.get_ranges(key, ranges)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # not a generator itself: the listing is counted when it is asked for, not when consumed
        self.counts.add("list", prefix)
        return self.inner.list(prefix)

    def stat(self, key: str) -> ObjectInfo | None:
        self.counts.add("stat", key)
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self.counts.add("delete", key)
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()

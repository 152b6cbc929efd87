"""The event log in memory: the same promises as the SQLite store, for tests without files.

It serves the ports `RunLog` and `LogReader` (`davit/domain/ports.py`) with the semantics of
`eventstore/sqlite.py`, checked by the same contract suite (`tests/contract/`): an append
with a stale expected version raises `ConcurrencyError` and writes nothing; an append whose
event ids are all known gives back their first positions (a retry), one that repeats only
some of them, or one id twice, is refused; an atomic append to several streams lands whole or
not at all; positions are global, gap-free and only grow; the data is stored as the canonical
JSON text SQLite stores, so a read gives a fresh copy and data that is not JSON is refused as
SQLite refuses it; each event carries the hash chain, which `verify_chain` checks, keyed as
the SQL stores key it once given the log key (`use_key`; `davit/eventstore/keying.py`).

Everything an append checks and writes happens without an await in between, on the event
loop's thread, so of concurrent appenders exactly one wins, as under SQLite's write lock. It
is not durable. A tail waits for the next append instead of polling.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from davit.domain.daemons import DaemonBeat, DaemonSeen
from davit.domain.errors import ConcurrencyError, EventStoreError
from davit.domain.events import NewEvent, StoredEvent, StreamAppend
from davit.domain.ports import EventLog
from davit.eventstore.chain import MARKER_STREAM, MARKER_TYPE, ChainReport
from davit.eventstore.keying import ChainWalk, chain_row, link_key, marker_to_write, seal_head
from davit.eventstore.logkey import LogKey
from davit.eventstore.schema import GENESIS_HASH
from davit.eventstore.sqlreads import iter_pages

_WHERE = "in memory"  # how errors name this log


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")  # (as the SQLite store stamps events)


@dataclass(frozen=True)
class _Row:
    """One event as the SQLite store's `events` table holds it (data as JSON text)."""

    position: int
    event_id: str
    stream: str
    version: int
    type: str
    schema: int
    data: str
    recorded_at: str
    prev_hash: str
    hash: str

    def stored(self) -> StoredEvent:
        data = json.loads(self.data)
        return StoredEvent(
            self.position, self.stream, self.version, self.event_id, self.type, self.schema, data, self.recorded_at, self.hash
        )


class MemoryEventStore:
    """The event log in a list. `async with MemoryEventStore() as store:` or use it as it is."""

    def __init__(self, clock: Callable[[], str] = utc_now, key: LogKey | None = None) -> None:
        self._clock = clock
        self._key = key
        self._mac: str | None = None  # the head's seal once the log is keyed (`chain_head.mac`)
        self._rows: list[_Row] = []  # by position - 1
        self._by_id: dict[str, int] = {}  # event id -> position
        self._versions: dict[str, int] = {}
        self._by_stream: dict[str, list[int]] = {}  # stream -> positions, in version order
        self._head = (0, GENESIS_HASH)  # (position, hash) of the newest event, kept apart like `chain_head`
        self._appended: asyncio.Event | None = None  # set at each append, then replaced (wakes tails)
        self._beats: dict[str, tuple[DaemonBeat, str, float]] = {}  # name -> (beat, when, monotonic)

    # --- lifecycle (nothing to open; the same shape as the SQLite store) ----------------------

    async def open(self) -> MemoryEventStore:
        self.use_key(self._key)
        return self

    def use_key(self, key: LogKey | None) -> None:
        """Append from now on as a store opened with `key` does (`key` None: as one without):
        a key seals the log under it first if it is not keyed (the SQL stores' `open`), and a
        keyed log refuses appends without its key."""
        if key is not None:
            marker = next((r for r in self._rows if r.stream == MARKER_STREAM and r.type == MARKER_TYPE), None)
            new = marker_to_write(_WHERE, key, None if marker is None else json.loads(marker.data), self._head)
            if new is not None:
                part = StreamAppend(MARKER_STREAM, self._versions.get(MARKER_STREAM, 0), (new,))
                self._write(self._rows_for([part], key.secret), key.secret)
        self._key = key  # (only once it fits the log)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> MemoryEventStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def writes_failing(self) -> bool:
        return False  # memory always takes writes

    # --- appends -----------------------------------------------------------------------------

    async def append(self, stream: str, expected_version: int, events: Sequence[NewEvent], *, patient: bool = True) -> list[int]:
        return await self.append_atomic([StreamAppend(stream, expected_version, tuple(events))], patient=patient)

    async def append_atomic(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[int]:
        return [e.position for e in await self.append_atomic_read_back(parts, patient=patient)]

    async def append_read_back(
        self, stream: str, expected_version: int, events: Sequence[NewEvent], *, patient: bool = True
    ) -> list[StoredEvent]:
        return await self.append_atomic_read_back([StreamAppend(stream, expected_version, tuple(events))], patient=patient)

    async def append_atomic_read_back(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[StoredEvent]:
        """Check, then write every part; nothing awaits in between (see the module's docstring)."""
        await asyncio.sleep(0)  # an append is a suspension point, as with a real store
        ids = [e.event_id for part in parts for e in part.events]
        if len(set(ids)) != len(ids):
            raise EventStoreError("an append carries the same event id twice")
        known = [i for i in ids if i in self._by_id]
        if known:
            if len(known) == len(ids):  # a retry of an append that already landed
                return [self._rows[self._by_id[i] - 1].stored() for i in ids]
            raise EventStoreError("an append repeats some, not all, of its event ids")
        for part in parts:
            actual = self._versions.get(part.stream, 0)
            if actual != part.expected_version:
                raise ConcurrencyError(part.stream, part.expected_version, actual)
        secret = link_key(_WHERE, self._mac, self._key)
        rows = self._rows_for(parts, secret)
        self._write(rows, secret)
        return [row.stored() for row in rows]

    def _write(self, rows: list[_Row], secret: bytes | None) -> None:
        for row in rows:
            self._rows.append(row)
            self._by_id[row.event_id] = row.position
            self._versions[row.stream] = row.version
            self._by_stream.setdefault(row.stream, []).append(row.position)
        if rows:
            self._head = (rows[-1].position, rows[-1].hash)
            self._mac = seal_head(secret, *self._head)
            self._wake_tails()

    def _rows_for(self, parts: Sequence[StreamAppend], secret: bytes | None) -> list[_Row]:
        """The rows an append would write, linked on from the head; writes nothing (so data
        that is not JSON fails the append before any of it is stored)."""
        position, prev_hash = self._head
        versions = dict(self._versions)
        rows: list[_Row] = []
        for part in parts:
            for new in part.events:
                position += 1
                version = versions.get(part.stream, 0) + 1
                versions[part.stream] = version
                try:
                    row = _Row(*chain_row(new, part.stream, version, position, prev_hash, self._clock(), secret))
                except (TypeError, ValueError, RecursionError) as exc:
                    raise EventStoreError(f"event log write failed: {type(exc).__name__}: {exc}") from exc
                rows.append(row)
                prev_hash = row.hash
        return rows

    def _wake_tails(self) -> None:
        if self._appended is not None:
            self._appended.set()
            self._appended = None

    # --- reads -------------------------------------------------------------------------------

    async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        positions = self._by_stream.get(stream, [])
        return [self._rows[p - 1].stored() for p in positions[max(from_version, 1) - 1 :]]

    async def stream_version(self, stream: str) -> int:
        return self._versions.get(stream, 0)

    async def head_position(self) -> int:
        return self._head[0]

    async def streams(self, prefix: str) -> list[str]:
        firsts = [(positions[0], stream) for stream, positions in self._by_stream.items() if stream.startswith(prefix)]
        return [stream for _position, stream in sorted(firsts)]

    async def read_all(self, after_position: int = 0, limit: int = 1000, stream_prefix: str | None = None) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for row in self._rows[max(after_position, 0) :]:
            if len(out) >= limit:
                break
            if stream_prefix is None or row.stream.startswith(stream_prefix):
                out.append(row.stored())
        return out

    async def iter_all(
        self, after_position: int = 0, stream_prefix: str | None = None, page: int = 2000
    ) -> AsyncIterator[StoredEvent]:
        async for row in iter_pages(self.read_all, after_position, stream_prefix, page):
            yield row

    async def tail(
        self, after_position: int = 0, stream_prefix: str | None = None, poll_seconds: float = 0.2
    ) -> AsyncIterator[StoredEvent]:
        """Every event after `after_position`, then each new one as it is appended. The wait
        is registered before the read that found nothing, with no await in between, so an
        append between the two cannot be missed; `poll_seconds` only bounds each wait."""
        while True:
            if self._appended is None:
                self._appended = asyncio.Event()
            appended = self._appended
            rows = await self.read_all(after_position, 1000, stream_prefix)
            for row in rows:
                yield row
                after_position = row.position
            if not rows:
                try:
                    await asyncio.wait_for(appended.wait(), poll_seconds)
                except TimeoutError:
                    pass

    # --- the daemons' heartbeats (davit/domain/daemons.py) ------------------------------------

    async def beat(self, beat: DaemonBeat) -> None:
        self._beats[beat.name] = (beat, utc_now(), time.monotonic())

    async def daemons(self) -> list[DaemonSeen]:
        now = time.monotonic()
        return [DaemonSeen(beat, at, now - mono) for _name, (beat, at, mono) in sorted(self._beats.items())]

    # --- integrity ---------------------------------------------------------------------------

    async def verify_chain(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport:
        """Recompute the chain from the first event; name the first position that breaks it
        (as `SqliteEventStore.verify_chain` does: `keying.ChainWalk`)."""
        walk = ChainWalk(_WHERE, key, key_path)
        for row in self._rows:
            broken = walk.row(row)
            if broken is not None:
                return broken
        return walk.head(*self._head, self._mac)


if TYPE_CHECKING:  # mypy checks here that the memory store serves both ports
    _serves: type[EventLog] = MemoryEventStore

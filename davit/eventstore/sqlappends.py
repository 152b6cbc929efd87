"""The appends the SQL stores (SQLite, PostgreSQL) share: group commit, the checks of a batch,
the rows and chain links it writes, and the retry of a write the storage could not take.

Appends waiting at the same moment are gathered into one transaction and each is
acknowledged only after that commit. Each request in a batch is checked on its own (`check`),
so a stale expected version or a half-repeated append fails that request alone and writes
nothing of it; the others of the batch are written, linked on from the head once for the
whole batch (`link_batch`). A store supplies what differs: `_transact` (one transaction for a
batch: its locks, isolation and dialect), `_map_error` (its driver's errors as davit's) and,
if it has one, `_refuse_appends` (a read-only handle).

Given a `WriteOutage` (davitd's `LogHealth`), an append waits a storage failure out: it is
retried with backoff, unchanged, until it lands. Its event ids were fixed by the writer before
the first try, so a try whose acknowledgement was lost is found and replayed, never written
twice. `patient=False` tries once (a worker thread must not block on a full disk).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from davit.domain.errors import LOG_UNWRITABLE, ConcurrencyError, DavitError, EventStoreError
from davit.domain.events import NewEvent, StoredEvent, StreamAppend
from davit.eventstore.sqlreads import json_object

# What makes one row: (event, stream, version, position, prev_hash) -> the row's tuple, in
# `INSERT` order, its hash last (see `SqliteEventStore._row`).
RowMaker = Callable[[NewEvent, str, int, int, str], tuple[Any, ...]]
Result = list[int] | BaseException


@dataclass
class _Request:
    parts: tuple[StreamAppend, ...]
    done: asyncio.Future[list[int]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # The events as the transaction wrote them (what a read would give), set by the writer;
    # None for a retry of an append that had already landed (a replay writes nothing).
    written: list[StoredEvent] | None = None


class WriteOutage(Protocol):
    """What a store does about writes the storage cannot take (davitd's `davit/daemon/loghealth.py`)."""

    @property
    def failing(self) -> bool:
        """True from a failed write until a write lands again."""
        ...

    def noticed(self, error: DavitError) -> None:
        """A write failed with `error` (one of `LOG_UNWRITABLE`)."""

    async def backoff(self, error: DavitError) -> None:
        """Wait before the next try of a failed write, or raise `error` to give up on it."""

    def succeeded(self) -> None:
        """A write landed."""


def _written(row: tuple[Any, ...]) -> StoredEvent:
    """The stored event an inserted row (`_row`'s tuple) is, as `stored_event` would read it back:
    its data decoded from the very JSON text stored, so the fold sees what a replay sees."""
    position, event_id, stream, version, type_, schema, data, recorded_at, _prev_hash, hash_ = row
    return StoredEvent(position, stream, version, event_id, type_, schema, json_object(data, position), recorded_at, hash_)


def _check(request: _Request, versions: dict[str, int], replays: dict[str, int]) -> Result | None:
    """None if the request may be written; otherwise its result (a replay or an error)."""
    ids = [e.event_id for part in request.parts for e in part.events]
    if len(set(ids)) != len(ids):
        return EventStoreError("an append carries the same event id twice")
    known = [i for i in ids if i in replays]
    if known:
        if len(known) == len(ids):  # a retry of an append that already landed
            return [replays[i] for i in ids]
        return EventStoreError("an append repeats some, not all, of its event ids")
    for part in request.parts:
        if versions[part.stream] != part.expected_version:
            return ConcurrencyError(part.stream, part.expected_version, versions[part.stream])
    return None


def link_batch(
    batch: list[_Request],
    versions: dict[str, int],
    replays: dict[str, int],
    position: int,
    prev_hash: str,
    row: RowMaker,
) -> tuple[list[tuple[Any, ...]], list[Result], int, str]:
    """The rows one transaction writes for `batch`, linked on from the head (`position`,
    `prev_hash`), each request checked against `versions` and `replays` (the stored ones, then
    updated with what the batch writes before it: two requests of one batch on one stream are
    checked in order). Gives the rows, each request's result and the new head; sets each
    written request's `written`."""
    rows: list[tuple[Any, ...]] = []
    results: list[Result] = []
    for request in batch:
        request.written = None  # (a try that did not commit may have set it)
        outcome = _check(request, versions, replays)
        if outcome is not None:
            results.append(outcome)
            continue
        positions: list[int] = []
        written: list[StoredEvent] = []
        for part in request.parts:
            version = versions[part.stream]
            for new in part.events:
                position, version = position + 1, version + 1
                made = row(new, part.stream, version, position, prev_hash)
                prev_hash = made[-1]
                rows.append(made)
                written.append(_written(made))
                replays[new.event_id] = position
                positions.append(position)
            versions[part.stream] = version
        request.written = written
        results.append(positions)
    return rows, results, position, prev_hash


def _settle(request: _Request, result: Result) -> None:
    if request.done.done():
        return
    if isinstance(result, BaseException):
        request.done.set_exception(result)
    else:
        request.done.set_result(result)


def raise_into(request: _Request, mapper: Callable[[BaseException], BaseException]) -> None:
    exc = sys.exc_info()[1]
    assert exc is not None
    if not request.done.done():
        request.done.set_exception(mapper(exc))


class GroupCommitAppends:
    """The `RunLog` appends of a SQL store, group-committed. The store sets `_outage`,
    `_pending = []`, `_commit_lock = asyncio.Lock()` and `append_observer` in its `__init__`."""

    _outage: WriteOutage | None
    _pending: list[_Request]
    _commit_lock: asyncio.Lock
    # Told the seconds each acknowledged append took (waiting for its batch included), on
    # the event loop's thread: davitd's metrics set it (`davit/daemon/metrics.py`).
    append_observer: Callable[[float], None] | None

    async def _transact(self, batch: list[_Request]) -> list[Result]:
        """One transaction for the whole batch: each request's positions or error."""
        raise NotImplementedError

    def _map_error(self, exc: BaseException) -> BaseException:
        raise NotImplementedError

    def _refuse_appends(self) -> None:
        """Raise if this handle may not append at all (default: it may)."""

    @property
    def writes_failing(self) -> bool:
        """True while writes fail for storage reasons (only known with a `WriteOutage`)."""
        return self._outage is not None and self._outage.failing

    async def append(self, stream: str, expected_version: int, events: Sequence[NewEvent], *, patient: bool = True) -> list[int]:
        """Append events to a stream whose version must be `expected_version`; their positions."""
        return await self.append_atomic([StreamAppend(stream, expected_version, tuple(events))], patient=patient)

    async def append_atomic(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[int]:
        """Append to several streams in one transaction: all parts are written, or none is.

        With a `WriteOutage`, a storage failure is retried (the same parts, the same event ids)
        until the append lands or the outage gives up; `patient=False` tries once.
        """
        return (await self._append_until_done(parts, patient)).done.result()

    async def append_read_back(
        self, stream: str, expected_version: int, events: Sequence[NewEvent], *, patient: bool = True
    ) -> list[StoredEvent]:
        """`append`, giving back the stored events as a read of the stream would (position,
        version, recorded_at, hash), without reading them: the writer built them from the rows
        it inserted. A retry of an append that had already landed reads them."""
        return await self.append_atomic_read_back([StreamAppend(stream, expected_version, tuple(events))], patient=patient)

    async def append_atomic_read_back(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[StoredEvent]:
        """`append_atomic`, giving back the stored events of every part, in order (see
        `append_read_back`)."""
        request = await self._append_until_done(parts, patient)
        if request.written is not None:
            return request.written
        stored: list[StoredEvent] = []
        for part in parts:  # a replay: read what the first try wrote
            stored += (await self.read_stream(part.stream, part.expected_version + 1))[: len(part.events)]
        return stored

    if TYPE_CHECKING:  # the store's reads (`SqlReads`); declared here only for the replay above

        async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]: ...

    async def _append_until_done(self, parts: Sequence[StreamAppend], patient: bool) -> _Request:
        self._refuse_appends()
        while True:
            try:
                request = await self._append_once(parts)
            except LOG_UNWRITABLE as exc:
                if self._outage is None:
                    raise
                self._outage.noticed(exc)
                if not patient:
                    raise
                await self._outage.backoff(exc)
                continue
            if self._outage is not None:
                self._outage.succeeded()
            return request

    async def _append_once(self, parts: Sequence[StreamAppend]) -> _Request:
        started = time.perf_counter()
        request = _Request(tuple(parts))
        self._pending.append(request)
        async with self._commit_lock:
            if not request.done.done():
                # Let appenders that became ready in this loop turn (typically the ones whose
                # previous append was just acknowledged) join this batch before it is taken.
                await asyncio.sleep(0)
                batch, self._pending = self._pending, []
                await self._commit(batch)
        await request.done  # (raises what the append raised)
        if self.append_observer is not None:
            self.append_observer(time.perf_counter() - started)
        return request

    async def _commit(self, batch: list[_Request]) -> None:
        try:
            results = await self._transact(batch)
        except Exception:
            if len(batch) == 1:
                raise_into(batch[0], self._map_error)
                return
            # One request broke the shared transaction in a way the checks did not foresee:
            # commit each on its own so the others still land.
            for request in batch:
                try:
                    (result,) = await self._transact([request])
                    _settle(request, result)
                except Exception:
                    raise_into(request, self._map_error)
            return
        for request, result in zip(batch, results, strict=True):
            _settle(request, result)

"""The SQLite event store: atomic appends with expected versions, group commit, reads, tailing.

Writers use one connection that opens every transaction with `BEGIN IMMEDIATE`, so a
read-then-write transaction never fails its lock upgrade; readers use their own pool and never
block the writer (WAL). Appends waiting at the same moment are gathered into one durable
transaction (`synchronous=FULL`) and each is acknowledged only after that commit: this keeps
every append durable while multiplying throughput. Each request in a batch is checked on its
own, so a stale expected version rejects that request alone and writes nothing of it.

A write the storage cannot take (full disk, file-size limit, I/O error) is raised as
`EventLogFull` / `EventLogUnavailable` naming the state directory (eventstore/failures.py).
Given a `WriteOutage` (davitd's `LogHealth`), an append waits such a failure out instead: it
is retried with backoff, unchanged, until it lands. Its event ids were fixed by the writer
before the first try, so a try whose acknowledgement was lost is found and replayed, never
written twice. `patient=False` tries once (a worker thread must not block on a full disk).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine, event, func, insert, select, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from domain.errors import LOG_UNWRITABLE, ConcurrencyError, DavitError
from domain.events import NewEvent, StoredEvent, StreamAppend
from eventstore import schema as s
from eventstore.chain import canonical_json, event_hash
from eventstore.failures import storage_failure

BUSY_TIMEOUT_MS = 30_000


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class _Request:
    parts: tuple[StreamAppend, ...]
    done: asyncio.Future[list[int]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_position: int | None = None
    reason: str | None = None


class EventStoreError(DavitError):
    pass


class WriteOutage(Protocol):
    """What a store does about writes the storage cannot take (davitd's `daemon/loghealth.py`)."""

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


def _configure(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def _writer_engine(path: Path) -> Engine:
    # The writer runs in one dedicated thread, so a whole group-commit transaction costs one
    # hop off the event loop instead of one per statement.
    engine = create_engine(f"sqlite:///{path}", poolclass=StaticPool, connect_args={"check_same_thread": False})
    _configure(engine, "BEGIN IMMEDIATE")
    return engine


def _reader_engine(path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=2, max_overflow=8)
    _configure(engine.sync_engine, "BEGIN")
    return engine


def _stored(row: Row[Any]) -> StoredEvent:
    return StoredEvent(
        position=row.position,
        stream=row.stream,
        version=row.version,
        event_id=row.event_id,
        type=row.type,
        schema=row.schema,
        data=json.loads(row.data),
        recorded_at=row.recorded_at,
        hash=row.hash,
    )


class SqliteEventStore:
    """The event log in one SQLite file. Open with `await store.open()`; close when done."""

    def __init__(self, path: Path, clock: Callable[[], str] = utc_now, outage: WriteOutage | None = None) -> None:
        self.path = path
        self._clock = clock
        self._outage = outage
        self._writer: Engine | None = None
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="davit-eventlog")
        self._reader: AsyncEngine | None = None
        self._pending: list[_Request] = []
        self._commit_lock = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SqliteEventStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _writer_engine(self.path)
        try:
            await self._in_writer(self._migrate)
        except Exception as exc:
            failure = storage_failure(exc, self.path)
            if failure is None:
                raise
            raise failure from exc
        self._reader = _reader_engine(self.path)
        return self

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.dispose()
        if self._writer is not None:
            await self._in_writer(self._writer.dispose)
        self._writer_thread.shutdown(wait=True)
        self._writer = self._reader = None

    async def __aenter__(self) -> SqliteEventStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _migrate(self) -> None:
        assert self._writer is not None
        with self._writer.begin() as conn:
            s.metadata.create_all(conn)
            current = conn.execute(select(func.max(s.schema_version.c.version))).scalar()
            if current is not None and current > s.LATEST_VERSION:
                raise EventStoreError(
                    f"{self.path} has log schema {current}, newer than this davit ({s.LATEST_VERSION}); "
                    "upgrade davit"
                )
            for version in range(int(current or 0) + 1, s.LATEST_VERSION + 1):
                for statement in s.MIGRATIONS[version]:
                    conn.execute(text(statement))
                conn.execute(insert(s.schema_version).values(version=version, applied_at=self._clock()))
            if conn.execute(select(s.chain_head.c.id)).first() is None:
                conn.execute(insert(s.chain_head).values(id=1, position=0, hash=s.GENESIS_HASH))

    # --- appends -----------------------------------------------------------------------------

    @property
    def writes_failing(self) -> bool:
        """True while writes fail for storage reasons (only known with a `WriteOutage`)."""
        return self._outage is not None and self._outage.failing

    async def append(self, stream: str, expected_version: int, events: Sequence[NewEvent], *,
                     patient: bool = True) -> list[int]:
        """Append events to a stream whose version must be `expected_version`; their positions."""
        return await self.append_atomic([StreamAppend(stream, expected_version, tuple(events))], patient=patient)

    async def append_atomic(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[int]:
        """Append to several streams in one transaction: all parts are written, or none is.

        With a `WriteOutage`, a storage failure is retried (the same parts, the same event ids)
        until the append lands or the outage gives up; `patient=False` tries once.
        """
        while True:
            try:
                positions = await self._append_once(parts)
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
            return positions

    async def _append_once(self, parts: Sequence[StreamAppend]) -> list[int]:
        request = _Request(tuple(parts))
        self._pending.append(request)
        async with self._commit_lock:
            if not request.done.done():
                # Let appenders that became ready in this loop turn (typically the ones whose
                # previous append was just acknowledged) join this batch before it is taken.
                await asyncio.sleep(0)
                batch, self._pending = self._pending, []
                await self._commit(batch)
        return await request.done

    async def _commit(self, batch: list[_Request]) -> None:
        try:
            results = await self._in_writer(self._write, batch)
        except Exception:
            if len(batch) == 1:
                raise_into(batch[0], self._map_error)
                return
            # One request broke the shared transaction in a way the checks did not foresee:
            # commit each on its own so the others still land.
            for request in batch:
                try:
                    (result,) = await self._in_writer(self._write, [request])
                    _settle(request, result)
                except Exception:
                    raise_into(request, self._map_error)
            return
        for request, result in zip(batch, results, strict=True):
            _settle(request, result)

    def _map_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, DavitError):
            return exc
        mapped = storage_failure(exc, self.path) or EventStoreError(
            f"event log write failed: {type(exc).__name__}: {exc}")
        mapped.__cause__ = exc
        return mapped

    def _write(self, batch: list[_Request]) -> list[list[int] | BaseException]:
        """One transaction for the whole batch, run in the writer thread (a single hop).

        The hot path goes through `exec_driver_sql` with fixed statements: building
        expressions per transaction cost several times the commit itself.
        """
        assert self._writer is not None
        with self._writer.begin() as conn:
            position, prev_hash = conn.exec_driver_sql(_HEAD_SQL).one()
            versions, replays = _lookup(conn, batch)
            rows: list[tuple[Any, ...]] = []
            results: list[list[int] | BaseException] = []
            for request in batch:
                outcome = _check(request, versions, replays)
                if outcome is not None:
                    results.append(outcome)
                    continue
                positions = []
                for part in request.parts:
                    version = versions[part.stream]
                    for new in part.events:
                        position += 1
                        version += 1
                        row = self._row(new, part.stream, version, position, prev_hash)
                        prev_hash = row[-1]
                        rows.append(row)
                        replays[new.event_id] = position
                        positions.append(position)
                    versions[part.stream] = version
                results.append(positions)
            if rows:
                conn.exec_driver_sql(_INSERT_SQL, rows)
                conn.exec_driver_sql(_HEAD_UPDATE_SQL, (position, prev_hash))
            return results

    def _row(self, new: NewEvent, stream: str, version: int, position: int, prev_hash: str) -> tuple[Any, ...]:
        data = canonical_json(new.data)
        recorded_at = self._clock()
        digest = event_hash(prev_hash, position, new.event_id, stream, version, new.type, new.schema, data, recorded_at)
        return (position, new.event_id, stream, version, new.type, new.schema, data, recorded_at, prev_hash, digest)

    async def _in_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, fn, *args)

    # --- reads -------------------------------------------------------------------------------

    async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        query = (
            select(s.events)
            .where(s.events.c.stream == stream, s.events.c.version >= from_version)
            .order_by(s.events.c.version)
        )
        return await self._select(query)

    async def read_all(
        self, after_position: int = 0, limit: int = 1000, stream_prefix: str | None = None
    ) -> list[StoredEvent]:
        query = select(s.events).where(s.events.c.position > after_position)
        if stream_prefix is not None:
            query = query.where(s.events.c.stream.startswith(stream_prefix, autoescape=True))
        return await self._select(query.order_by(s.events.c.position).limit(limit))

    async def iter_all(
        self, after_position: int = 0, stream_prefix: str | None = None, page: int = 2000
    ) -> AsyncIterator[StoredEvent]:
        """Every event after a position, read page by page."""
        while True:
            rows = await self.read_all(after_position, page, stream_prefix)
            for row in rows:
                yield row
            if len(rows) < page:
                return
            after_position = rows[-1].position

    async def stream_version(self, stream: str) -> int:
        assert self._reader is not None
        async with self._reader.connect() as conn:
            current = (await conn.execute(select(func.max(s.events.c.version)).where(s.events.c.stream == stream))).scalar()
        return int(current or 0)

    async def head_position(self) -> int:
        assert self._reader is not None
        async with self._reader.connect() as conn:
            current = (await conn.execute(select(func.max(s.events.c.position)))).scalar()
        return int(current or 0)

    async def streams(self, prefix: str) -> list[str]:
        assert self._reader is not None
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(s.events.c.stream)
                .where(s.events.c.stream.startswith(prefix, autoescape=True), s.events.c.version == 1)
                .order_by(s.events.c.position)
            )
            return [r.stream for r in rows]

    async def tail(
        self, after_position: int = 0, stream_prefix: str | None = None, poll_seconds: float = 0.2
    ) -> AsyncIterator[StoredEvent]:
        """Every event after `after_position`, in order, then new ones as they are committed."""
        while True:
            rows = await self.read_all(after_position, 1000, stream_prefix)
            for row in rows:
                yield row
                after_position = row.position
            if not rows:
                await asyncio.sleep(poll_seconds)

    async def _select(self, query: Any) -> list[StoredEvent]:
        assert self._reader is not None
        async with self._reader.connect() as conn:
            return [_stored(r) for r in await conn.execute(query)]

    async def integrity_check(self) -> str:
        assert self._reader is not None
        async with self._reader.connect() as conn:
            rows = (await conn.exec_driver_sql("PRAGMA integrity_check")).all()
        return "; ".join(str(r[0]) for r in rows)

    # --- integrity ---------------------------------------------------------------------------

    async def verify_chain(self) -> ChainReport:
        """Recompute the chain from the first event; name the first position that breaks it."""
        assert self._reader is not None
        prev_hash, expected_position, checked = s.GENESIS_HASH, 1, 0
        async with self._reader.connect() as conn:
            result = await conn.stream(select(s.events).order_by(s.events.c.position))
            async for row in result:
                if row.position != expected_position:
                    return ChainReport(False, checked, expected_position, "event missing (gap in positions)")
                if row.prev_hash != prev_hash:
                    return ChainReport(False, checked, row.position, "previous hash does not match")
                digest = event_hash(
                    prev_hash, row.position, row.event_id, row.stream, row.version,
                    row.type, row.schema, row.data, row.recorded_at,
                )
                if digest != row.hash:
                    return ChainReport(False, checked, row.position, "content does not match its hash")
                prev_hash, expected_position, checked = digest, expected_position + 1, checked + 1
            head = (await conn.execute(select(s.chain_head.c.position, s.chain_head.c.hash))).one()
        if head.position != expected_position - 1 or head.hash != prev_hash:
            return ChainReport(False, checked, expected_position, "newest events missing (chain head ahead)")
        return ChainReport(True, checked)


_HEAD_SQL = "SELECT position, hash FROM chain_head WHERE id = 1"
_HEAD_UPDATE_SQL = "UPDATE chain_head SET position = ?, hash = ? WHERE id = 1"
_INSERT_SQL = (
    "INSERT INTO events (position, event_id, stream, version, type, schema, data, recorded_at, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_IN_LIMIT = 500  # bound parameters per IN (...) list


def _lookup(conn: Connection, batch: list[_Request]) -> tuple[dict[str, int], dict[str, int]]:
    """Current versions of the streams the batch touches, and which of its event ids exist."""
    streams = sorted({part.stream for r in batch for part in r.parts})
    ids = [e.event_id for r in batch for part in r.parts for e in part.events]
    versions = dict.fromkeys(streams, 0)
    replays: dict[str, int] = {}
    for group in _groups(streams):
        marks = ",".join("?" * len(group))
        rows = conn.exec_driver_sql(
            f"SELECT stream, MAX(version) FROM events WHERE stream IN ({marks}) GROUP BY stream", tuple(group)
        )
        versions.update((stream, int(version)) for stream, version in rows)
    for group in _groups(ids):
        marks = ",".join("?" * len(group))
        rows = conn.exec_driver_sql(f"SELECT event_id, position FROM events WHERE event_id IN ({marks})", tuple(group))
        replays.update((event_id, int(pos)) for event_id, pos in rows)
    return versions, replays


def _groups(items: list[str]) -> list[list[str]]:
    return [items[i : i + _IN_LIMIT] for i in range(0, len(items), _IN_LIMIT)]


def _check(request: _Request, versions: dict[str, int], replays: dict[str, int]) -> list[int] | BaseException | None:
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


def _settle(request: _Request, result: list[int] | BaseException) -> None:
    if request.done.done():
        return
    if isinstance(result, BaseException):
        request.done.set_exception(result)
    else:
        request.done.set_result(result)


def raise_into(request: _Request, mapper: Callable[[BaseException], BaseException]) -> None:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    if not request.done.done():
        request.done.set_exception(mapper(exc))


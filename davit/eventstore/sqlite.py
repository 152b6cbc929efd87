"""The SQLite event store: atomic appends with expected versions, group commit, reads, tailing.

Writers use one connection that opens every transaction with `BEGIN IMMEDIATE`, so a
read-then-write transaction never fails its lock upgrade; readers use their own pool and never
block the writer (WAL). Appends waiting at the same moment are gathered into one durable
transaction (`synchronous=FULL`) and each is acknowledged only after that commit: this keeps
every append durable while multiplying throughput. Each request in a batch is checked on its
own, so a stale expected version rejects that request alone and writes nothing of it. (The
group commit, the checks and the retries are the SQL stores' shared `sqlappends.py`; this
module gives the transaction.)

A write the storage cannot take (full disk, file-size limit, I/O error) is raised as
`EventLogFull` / `EventLogUnavailable` naming the state directory (davit/eventstore/failures.py);
given a `WriteOutage`, an append waits it out (`sqlappends.py`).

A store opened `readonly` (the CLI's read commands) has no writer at all: its connections are
SQLite `mode=ro` URIs, it runs no migration and takes no write lock, so it works on a
read-only state directory while davitd writes. SQLite's own errors (not a database,
malformed, a table gone) surface as one typed line, `EventLogDamaged`. With a log key the
chain is keyed (`davit/eventstore/chain.py`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite
import anyio
import anyio.lowlevel
from sqlalchemy import create_engine, event, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from davit.domain.errors import EXIT_USAGE, LOG_UNWRITABLE, DavitError, EventStoreError
from davit.domain.events import NewEvent
from davit.eventstore import schema as s
from davit.eventstore.boundedread import file_kind
from davit.eventstore.chain import MARKER_STREAM, MARKER_TYPE, ChainReport, head_mac
from davit.eventstore.failures import storage_failure
from davit.eventstore.keying import ChainWalk, chain_row, check_writer_key, link_key, marker_to_write, seal_head
from davit.eventstore.logkey import LogKey
from davit.eventstore.sqlappends import GroupCommitAppends, Result, WriteOutage, _Request, link_batch
from davit.eventstore.sqlreads import SqlReads, json_object

BUSY_TIMEOUT_MS = 30_000


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class EventLogMissing(EventStoreError):
    """A command that must not create a log found none (a --home or state_dir typo, or davitd
    has never run with this configuration)."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path) -> None:
        super().__init__(f"no event log at {path} (has davitd run with this configuration?)")
        self.path = path


class EventLogDamaged(EventStoreError):
    """The database cannot be read as a davit log: not SQLite, truncated, a table gone."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"event log {path} is damaged: {reason}")
        self.path = path
        self.reason = reason


def _refuse_special_file(path: Path) -> None:
    """`EventLogDamaged` if something other than a regular file is at the log's path. SQLite
    opens it with a blocking open(2): a FIFO planted there would hang a reader forever, and a
    writer would take its read error for an outage and wait for it to pass."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # absent (davitd creates it) or unreadable: SQLite's own error says which
    if not stat.S_ISREG(mode):
        raise EventLogDamaged(path, f"it is {file_kind(mode)}, not a regular file; not opened")


class EventLogTooNew(EventStoreError):
    exit_code = EXIT_USAGE


class EventLogReadOnly(EventStoreError):
    """An append was asked of a log this process may only read (a read-only mount, another
    user's state directory)."""

    exit_code = EXIT_USAGE


def _configure(engine: Engine, begin: str, readonly: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not readonly:  # setting the journal mode may write; a reader leaves the file as it is
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


def _readonly_uri(path: Path) -> str:
    """`mode=ro`: SQLite opens the file read-only and refuses every write. A WAL log whose
    -wal and -shm are gone (davitd stopped cleanly) in a directory we cannot write cannot be
    opened that way (SQLite would have to create them); then all of the log is in the main
    file and it is read as `immutable`."""
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() and not os.access(path.parent, os.W_OK):
        uri += "&immutable=1"
    return uri


def _readonly_engine(path: Path) -> AsyncEngine:
    uri = _readonly_uri(path)

    async def connect() -> Any:
        return await aiosqlite.connect(uri, uri=True, check_same_thread=False)

    # The URL only picks the dialect and pool; `async_creator` makes every connection.
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", async_creator=connect, pool_size=2, max_overflow=8)
    _configure(engine.sync_engine, "BEGIN", readonly=True)
    return engine


class SqliteEventStore(SqlReads, GroupCommitAppends):
    """The event log in one SQLite file. Open with `await store.open()`; close when done."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], str] = utc_now,
        key: LogKey | None = None,
        key_path: Path | None = None,
        outage: WriteOutage | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        self._key = key
        self._key_path = key.path if key is not None else key_path  # where a key was looked for
        self._outage = outage
        self._writer: Engine | None = None
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="davit-eventlog")
        self._reader: AsyncEngine | None = None
        self._pending: list[_Request] = []
        self._commit_lock = asyncio.Lock()
        self.append_observer: Callable[[float], None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self, create: bool = True, readonly: bool = False) -> SqliteEventStore:
        """Open the log. `create` (davitd): make the log if missing, migrate it, and with a key
        seal it (see `davit/eventstore/chain.py`). Without `create` (the CLI's requests) the log must
        exist at the current schema. `readonly`: reads only, no write lock ever taken."""
        if (readonly or not create) and not self.path.exists():
            raise EventLogMissing(self.path)
        _refuse_special_file(self.path)
        if readonly:
            self._reader = _readonly_engine(self.path)
            try:
                async with self._reading() as conn:
                    await conn.run_sync(lambda c: _probe(c, self.path))
            except BaseException:
                await self.close()
                raise
            return self
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)):
            # SQLite needs the directory too (-wal, -shm, the journal); say so before it fails.
            raise EventLogReadOnly(f"the event log {self.path} is read-only here; this command appends to it")
        self._writer = _writer_engine(self.path)
        try:
            while True:
                try:
                    await self._in_writer(self._migrate if create else self._check_current)
                    break
                except LOG_UNWRITABLE as exc:
                    # Migrating or sealing writes too: davitd waits a full disk out here as it
                    # does for every append (one transaction, so a retry starts afresh).
                    if self._outage is None or not create:
                        raise
                    self._outage.noticed(exc)
                    await self._outage.backoff(exc)
        except BaseException:
            # (storage failures arrive typed: `_migrate` and `_check_current` run under `_mapped`)
            await self.close()
            raise
        if self._outage is not None and create:
            self._outage.succeeded()
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
        with _mapped(self.path), self._writer.begin() as conn:
            current = _probe(conn, self.path, fresh_ok=True)
            if current is None:  # a new log: the tables as they are now, every migration recorded
                s.metadata.create_all(conn)
                current = 0
                for version in range(1, s.LATEST_VERSION + 1):
                    conn.execute(insert(s.schema_version).values(version=version, applied_at=self._clock()))
            else:
                for version in range(current + 1, s.LATEST_VERSION + 1):
                    for statement in s.MIGRATIONS[version]:
                        conn.execute(text(statement))
                    conn.execute(insert(s.schema_version).values(version=version, applied_at=self._clock()))
            if conn.execute(select(s.chain_head.c.id)).first() is None:
                if conn.execute(select(s.events.c.position).limit(1)).first() is not None:
                    # Recreated at genesis, it would let the next append collide or hide the
                    # events' removal: the head of a log with events is never guessed.
                    raise EventLogDamaged(self.path, "chain_head has no row")
                conn.execute(insert(s.chain_head).values(id=1, position=0, hash=s.GENESIS_HASH))
            if self._key is not None:
                self._seal(conn, self._key)

    def _check_current(self) -> None:
        """A log the CLI appends requests to: there, at this davit's schema (davitd migrates)."""
        assert self._writer is not None
        with _mapped(self.path), self._writer.begin() as conn:
            current = _probe(conn, self.path)
            if current != s.LATEST_VERSION:
                raise EventStoreError(
                    f"{self.path} has log schema {current}, older than this davit "
                    f"({s.LATEST_VERSION}); start davitd once to upgrade it"
                )
            check_writer_key(self.path, _head(conn)[2] is not None, self._key, self._key_path)

    def _seal(self, conn: Connection, key: LogKey) -> None:
        """Make this log keyed under `key` if it is not: one keyed marker event whose hash covers
        the plain head, then the head sealed. A log already keyed must be keyed with `key`."""
        marker = conn.exec_driver_sql(_MARKER_SQL, (MARKER_STREAM, MARKER_TYPE)).first()
        position, prev_hash, _ = _head(conn)
        new = marker_to_write(
            self.path, key, None if marker is None else json_object(marker.data, marker.position), (position, prev_hash)
        )
        if new is None:
            return
        version = conn.exec_driver_sql("SELECT MAX(version) FROM events WHERE stream = ?", (MARKER_STREAM,)).scalar()
        row = self._row(new, MARKER_STREAM, int(version or 0) + 1, position + 1, prev_hash, key.secret)
        conn.exec_driver_sql(_INSERT_SQL, [row])
        conn.exec_driver_sql(_HEAD_UPDATE_SQL, (position + 1, row[-1], head_mac(key.secret, position + 1, row[-1])))

    # --- appends -----------------------------------------------------------------------------

    async def _transact(self, batch: list[_Request]) -> list[Result]:
        return await self._in_writer(self._write, batch)

    def _map_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, DavitError):
            return exc
        mapped = storage_failure(exc, self.path) or EventStoreError(f"event log write failed: {type(exc).__name__}: {exc}")
        mapped.__cause__ = exc
        return mapped

    def _write(self, batch: list[_Request]) -> list[Result]:
        """One transaction for the whole batch, run in the writer thread (a single hop).

        The hot path goes through `exec_driver_sql` with fixed statements: building
        expressions per transaction cost several times the commit itself.
        """
        assert self._writer is not None
        with self._writer.begin() as conn:
            position, prev_hash, mac = conn.exec_driver_sql(_HEAD_SQL).one()
            secret = link_key(self.path, mac, self._key)
            versions, replays = _lookup(conn, batch)

            def row(new: NewEvent, stream: str, version: int, position: int, prev_hash: str) -> tuple[Any, ...]:
                return self._row(new, stream, version, position, prev_hash, secret)

            rows, results, position, prev_hash = link_batch(batch, versions, replays, position, prev_hash, row)
            if rows:
                conn.exec_driver_sql(_INSERT_SQL, rows)
                conn.exec_driver_sql(_HEAD_UPDATE_SQL, (position, prev_hash, seal_head(secret, position, prev_hash)))
            return results

    def _row(
        self, new: NewEvent, stream: str, version: int, position: int, prev_hash: str, secret: bytes | None = None
    ) -> tuple[Any, ...]:
        return chain_row(new, stream, version, position, prev_hash, self._clock(), secret)

    async def _in_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, fn, *args)

    # --- reads -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _reading(self, whole_log: bool = False) -> AsyncIterator[AsyncConnection]:
        """A reader connection; SQLite's errors become one typed line (`EventLogDamaged`).

        Bounded reads (a page, a count: all but the audits, `whole_log`, which only the CLI runs)
        finish even if their caller is cancelled meanwhile: a query cut off in aiosqlite's thread leaves a connection whose
        close never completes, and the event loop then waits for it forever at exit (a second
        davitd refused the lock hung so, and so could any davitd stopping while a follower read)."""
        assert self._reader is not None
        await anyio.lowlevel.checkpoint_if_cancelled()  # (a loop of reads still ends when cancelled)
        with anyio.CancelScope(shield=not whole_log), _mapped(self.path):
            async with self._reader.connect() as conn:
                yield conn

    async def integrity_check(self) -> str:
        async with self._reading(whole_log=True) as conn:
            rows = (await conn.exec_driver_sql("PRAGMA integrity_check")).all()
        return "; ".join(str(r[0]) for r in rows)

    # --- integrity ---------------------------------------------------------------------------

    async def verify_chain(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport:
        """Recompute the chain from the first event; name the first position that breaks it.

        Events up to the key marker are plain links, the marker and every event after it keyed
        links (which needs `key`: `LogKeyError` naming the key without it), and a keyed log's
        head must carry the key's seal. With a key, a log with no marker is broken: its keyed
        part was removed (or the key made and davitd not started since)."""
        walk = ChainWalk(self.path, key, key_path)
        async with self._reading(whole_log=True) as conn:
            result = await conn.stream(select(s.events).order_by(s.events.c.position))
            async for row in result:
                broken = walk.row(row)
                if broken is not None:
                    return broken
            # SELECT *: a log not yet migrated to the keyed schema (read-only readers never
            # migrate) has no mac column, and is not keyed.
            head = (await conn.exec_driver_sql("SELECT * FROM chain_head WHERE id = 1")).one()._mapping
        return walk.head(head["position"], head["hash"], head.get("mac"))


_HEAD_SQL = "SELECT position, hash, mac FROM chain_head WHERE id = 1"
_HEAD_UPDATE_SQL = "UPDATE chain_head SET position = ?, hash = ?, mac = ? WHERE id = 1"
_MARKER_SQL = "SELECT position, data FROM events WHERE stream = ? AND type = ? ORDER BY position LIMIT 1"
_TABLES = ("events", "chain_head", "schema_version")


def _head(conn: Connection) -> tuple[int, str, str | None]:
    position, hash_, mac = conn.exec_driver_sql(_HEAD_SQL).one()
    return int(position), str(hash_), mac


def _probe(conn: Connection, path: Path, fresh_ok: bool = False) -> int | None:
    """The log's schema version; None for a new, empty file if `fresh_ok`. `EventLogDamaged`
    if it is not a whole davit log, `EventLogTooNew` if a newer davit wrote it."""
    names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in _TABLES if t not in names]
    if fresh_ok and not names:
        return None
    if missing:
        raise EventLogDamaged(path, f"table {', '.join(missing)} missing")
    current = conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar()
    if current is None:
        raise EventLogDamaged(path, "no schema version recorded")
    if int(current) > s.LATEST_VERSION:
        raise EventLogTooNew(f"{path} has log schema {current}, newer than this davit ({s.LATEST_VERSION}); upgrade davit")
    columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(chain_head)")}
    if int(current) >= 2 and "mac" not in columns:
        raise EventLogDamaged(path, "table chain_head has lost its mac column")
    return int(current)


class _mapped:
    """SQLite's own errors (not a database, malformed, no such table, cannot open) as one
    typed line naming the log; usable around sync and async code alike."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None or isinstance(exc, DavitError):
            return
        if isinstance(exc, NoResultFound | ValueError | TypeError):
            # Rows of a shape davit never writes (a head row gone, data that is not JSON, a
            # number that is text): someone edited the file. One line, not a traceback.
            detail = "chain_head has no row" if isinstance(exc, NoResultFound) else str(exc).splitlines()[0]
            raise EventLogDamaged(self.path, f"unexpected content ({detail})") from None
        original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        if not isinstance(original, sqlite3.Error):
            return
        reason = str(original).splitlines()[0] if str(original) else type(original).__name__
        if "locked" in reason or "busy" in reason or "unable to open" in reason:
            raise EventStoreError(f"event log {self.path}: {reason}") from None
        if "readonly" in reason:
            raise EventLogReadOnly(f"the event log {self.path} is read-only here: {reason}") from None
        # A full disk or an I/O error (a migration or the sealing writes too) is not damage:
        # the same write succeeds once there is room.
        failure = storage_failure(original, self.path)
        if failure is not None:
            raise failure from None
        raise EventLogDamaged(self.path, reason) from None


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


def log_head(path: Path) -> tuple[int, str, bool]:
    """The head (position, hash) of the log at `path` and whether it is keyed, read-only;
    (0, genesis, False) if there is no log yet. For making a key that will seal this head.
    The log is checked as every opening checks it (`_probe`) before any key is made for it."""
    if not path.exists():
        return 0, s.GENESIS_HASH, False
    _refuse_special_file(path)
    uri = _readonly_uri(path)
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)
    _configure(engine, "BEGIN", readonly=True)  # one snapshot for every read below
    try:
        with _mapped(path), engine.begin() as conn:
            if _probe(conn, path, fresh_ok=True) is None:
                return 0, s.GENESIS_HASH, False
            # not `_head`: a log of schema 1 (before keys) has no mac column until davitd migrates it
            position, hash_ = conn.exec_driver_sql("SELECT position, hash FROM chain_head WHERE id = 1").one()
            keyed = conn.exec_driver_sql(_MARKER_SQL, (MARKER_STREAM, MARKER_TYPE)).first() is not None
            return int(position), str(hash_), keyed
    finally:
        engine.dispose()

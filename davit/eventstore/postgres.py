"""The event log on PostgreSQL: the SQLite store's promises on a server several hosts share.

Same tables and ideas as `eventstore/sqlite.py` (see `eventstore/schema.py`): `events` with a
global `position`, `UNIQUE (stream, version)` (optimistic concurrency) and `UNIQUE (event_id)`
(idempotent appends), the data as the canonical JSON text the hash covers, `chain_head` and
`schema_version`. An append checks the expected versions and known event ids inside its
transaction and raises `ConcurrencyError` / gives back the first positions exactly as SQLite
does (the checks are the SQL stores' shared `sqlappends.py`); appends waiting at the same moment are
gathered into one transaction (group commit), each acknowledged after the commit. Commits are
durable: every writer connection runs with `synchronous_commit = on`, whatever the role's or
database's default.

Why a tailing reader never misses an event. PostgreSQL sequences hand out numbers at once
but transactions commit in any order, so a reader that remembers "last position seen" could
read 11 before a slower transaction holding 10 commits, and never look back. Here no
sequence is used: every writing transaction first takes `pg_advisory_xact_lock(LOCK_KEY)`
(one lock for the whole log, released only when the transaction ends), and only then, in
later statements, reads the head (`chain_head`) and assigns the next positions. Under READ
COMMITTED (set on every connection, whatever the database's default) each statement takes
a new snapshot, so the head read after the lock sees the previous holder's commit; and
PostgreSQL marks a transaction committed (visible) before it
releases its locks (`CommitTransaction`: `ProcArrayEndTransaction` precedes the release of
locks). So position N+1 is assigned only after N is visible: commit order is position order,
a snapshot that shows position P shows every position below it, and `read_all(after=P)` is a
safe way to tail. The lock also serializes several davitd and CLI processes appending to one
log. `tail` is woken by LISTEN/NOTIFY (every write NOTIFYs `davit_log` in its transaction,
delivered at the commit) and reads again every `poll_seconds` anyway.

Round trips. Appends go through connections of their own (psycopg, pipeline mode), not the
pool. A batch normally takes one round trip: BEGIN, the lock, one INSERT of every row (the
chain linked once for the batch, in Python) with the head's UPDATE, COMMIT; the INSERT is
guarded by the head this store committed last, so it writes only if nobody appended since
(then the stream versions it remembers are the stored ones). If the head moved, or a stream
is new to this store, or an event id is already stored, it writes nothing and the batch
takes the two round trips of a lookup (head, versions and known ids read under the lock).
bench/eventlog_postgres.py measures it against a raw psycopg loop.

The chain is SQLite's (`chain.py`), and so is its keying (`keying.py`, shared with SQLite):
given a log key, davitd's `open` seals the log under it in the same locked transaction that
makes or checks the tables (a keyed `LogKeyed` marker after the plain prefix, the head's `mac`
set), and from then on every append links its events with HMAC-SHA256 under the key and seals
the new head, in the same statements as before (no extra round trip: the one-round-trip write
is guarded by the remembered head's `mac` too). Several davitd sharing the log share the key
(each one's config names its copy); one with another key, or none, is refused. Whoever can
write these tables is the database's roles' business; `verify_chain` still finds an edited,
deleted or truncated event, and with the key an event rewritten with the public hashes.
SQLite's `PRAGMA integrity_check` has no PostgreSQL twin: the server checksums pages itself
(a cluster made with `--data-checksums`), so `integrity_check` here reports the checksum
failures the server counted in this database, and `verify_chain`,
which reads every row, is the content check `davit log verify` runs.

The URL (with its password) is read by reference by the caller and never put in an error, a
log line or `repr`: errors name `where` (`host:port/database`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from psycopg.pq import TransactionStatus
from sqlalchemy import select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from davit.domain.daemons import DaemonBeat, DaemonSeen
from davit.domain.errors import DavitError, EventLogFull, EventLogUnavailable, EventStoreError
from davit.domain.events import NewEvent, StoredEvent
from davit.eventstore import schema as s
from davit.eventstore.chain import MARKER_STREAM, MARKER_TYPE, ChainReport
from davit.eventstore.keying import ChainWalk, chain_row, check_writer_key, link_key, marker_to_write, seal_head
from davit.eventstore.logkey import LogKey
from davit.eventstore.sqlappends import GroupCommitAppends, Result, WriteOutage, _Request, link_batch
from davit.eventstore.sqlite import EventLogDamaged, EventLogMissing, EventLogTooNew, utc_now
from davit.eventstore.sqlreads import SqlReads, json_object

if TYPE_CHECKING:
    from davit.domain.ports import EventLog

# The one advisory lock every writing transaction takes first (the ASCII of "davitlog").
LOCK_KEY = 0x646176_69746C6F67
SCHEMA_VERSION = 1  # of the PostgreSQL tables; forward-only, like `schema.MIGRATIONS`

_DDL = (
    """CREATE TABLE events (
        position BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        type TEXT NOT NULL,
        schema INTEGER NOT NULL,
        data TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        CONSTRAINT uq_stream_version UNIQUE (stream, version)
    )""",
    "CREATE INDEX ix_events_type ON events (type)",
    "CREATE INDEX ix_events_stream_prefix ON events (stream text_pattern_ops, position)",  # LIKE 'run-%'
    "CREATE TABLE chain_head (id INTEGER PRIMARY KEY, position BIGINT NOT NULL, hash TEXT NOT NULL, mac TEXT)",
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
)
_TABLES = ("events", "chain_head", "schema_version")

_DAEMONS_DDL = """CREATE TABLE IF NOT EXISTS daemons (
    name TEXT PRIMARY KEY, version TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started_at TEXT NOT NULL, runs TEXT NOT NULL, runs_count INTEGER NOT NULL, log_problem TEXT,
    beat_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
_BEAT_SQL = (
    "INSERT INTO daemons (name, version, pid, host, started_at, runs, runs_count, log_problem, beat_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, "
    "pid = EXCLUDED.pid, host = EXCLUDED.host, started_at = EXCLUDED.started_at, runs = EXCLUDED.runs, "
    "runs_count = EXCLUDED.runs_count, log_problem = EXCLUDED.log_problem, beat_at = now()"
)
_DAEMONS_SQL = (
    "SELECT name, version, pid, host, started_at, runs, log_problem, beat_at, "
    "EXTRACT(EPOCH FROM now() - beat_at) FROM daemons ORDER BY name"
)
MAX_BEAT_RUNS = 64
DAEMONS_LOCK_KEY = LOCK_KEY + 1
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"
# Sent by every write in its transaction, so delivered at its commit (never for a rollback):
# wakes the tails (`tail`) listening on this database.
CHANNEL = "davit_log"
_NOTIFY_SQL = f"NOTIFY {CHANNEL}"
_HEAD_SQL = "SELECT position, hash, mac FROM chain_head WHERE id = 1"
# One snapshot: the head, the current version of each stream the batch appends to, and which
# of its event ids are stored (retries), as JSON objects.
_LOOKUP_SQL = (
    "SELECT h.position, h.hash, h.mac,"
    " (SELECT COALESCE(json_object_agg(v.stream, v.version), '{}') FROM"
    "  (SELECT stream, MAX(version) AS version FROM events WHERE stream = ANY(%s::text[]) GROUP BY stream) v),"
    " (SELECT COALESCE(json_object_agg(e.event_id, e.position), '{}') FROM events e WHERE e.event_id = ANY(%s::text[]))"
    " FROM chain_head h WHERE h.id = 1"
)
# Every row of the batch (one array a column) and the new head, in one statement.
_WRITE_SQL = (
    "WITH written AS (INSERT INTO events (position, event_id, stream, version, type, schema, data, recorded_at, prev_hash, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::int[], %s::text[], %s::int[], %s::text[], %s::text[],"
    " %s::text[], %s::text[]))"
    " UPDATE chain_head SET position = %s, hash = %s, mac = %s WHERE id = 1"
)
# The same, written only if the head is still the one given (then nobody appended since): 1 if written, 0 if not.
_WRITE_KNOWN_SQL = (
    "WITH head AS (SELECT 1 FROM chain_head WHERE id = 1 AND position = %s AND hash = %s AND mac IS NOT DISTINCT FROM %s::text),"
    " written AS (INSERT INTO events (position, event_id, stream, version, type, schema, data, recorded_at, prev_hash, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::int[], %s::text[], %s::int[], %s::text[], %s::text[],"
    " %s::text[], %s::text[]) WHERE EXISTS (SELECT 1 FROM head)),"
    " moved AS (UPDATE chain_head SET position = %s, hash = %s, mac = %s WHERE id = 1"
    " AND EXISTS (SELECT 1 FROM head) RETURNING 1)"
    " SELECT count(*) FROM moved"
)
_MARKER_SQL = "SELECT position, data FROM events WHERE stream = %s AND type = %s ORDER BY position LIMIT 1"
_KNOWN_STREAMS = 10_000  # streams whose versions a store remembers at most (then it forgets them all)


class EventStoreUrlError(EventStoreError):
    """The event store URL cannot be used (never shown: it holds a password)."""


def where(url: URL) -> str:
    """How errors name the log: `postgresql host:port/database`, without user or password."""
    return f"postgresql {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def parse_url(text: str, source: str) -> URL:
    """A `postgresql://` URL read from `source` (a file name), for psycopg 3; an error naming
    `source` and the reason, never the URL."""
    text = text.strip()
    # A raw `@` in the password would make the URL parser take the password's tail for the host
    # (or port, or database), which errors and `where` then show: refuse any `@` but the one.
    if text.count("@") > 1:
        raise EventStoreUrlError(f"{source}: the URL holds more than one '@'; write an '@' in the password as %40")
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number (never echoed: may hold the password)
        raise EventStoreUrlError(f"{source}: not a URL (expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE)") from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise EventStoreUrlError(f"{source}: the URL's scheme must be postgresql://, not {url.get_backend_name()!r}")
    if not url.database:
        raise EventStoreUrlError(f"{source}: the URL names no database (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)")
    return url.set(drivername="postgresql+psycopg")


def _seen(row: tuple[Any, ...]) -> DaemonSeen:
    """One `daemons` row as a beat. Any user of the database may have written the row: a `runs`
    that is no JSON list, NULLs where davitd never writes them, a list of a million runs; it is
    read as what it can be rather than failing the listing of every daemon."""
    name, version, pid, host, started_at, runs, log_problem, beat_at, age = row
    try:
        listed = json.loads(runs) if isinstance(runs, str) else []
    except ValueError:
        listed = []
    if not isinstance(listed, list):
        listed = []
    text = [str(r) for r in listed[:MAX_BEAT_RUNS]]
    beat = DaemonBeat(str(name), str(version or ""), int(pid or 0), str(host or ""), str(started_at or ""), text, log_problem)
    return DaemonSeen(beat, str(beat_at or ""), float("inf") if age is None else float(age))


class PostgresEventStore(SqlReads, GroupCommitAppends):
    """The event log in a PostgreSQL database. Open with `await store.open()`; close when done."""

    def __init__(
        self,
        url: URL,
        clock: Callable[[], str] = utc_now,
        outage: WriteOutage | None = None,
        key: LogKey | None = None,
        key_path: Path | None = None,
    ) -> None:
        self._url = url.set(drivername="postgresql+psycopg")
        self.where = where(self._url)
        self._clock = clock
        self._outage = outage
        self._key = key
        self._key_path = key.path if key is not None else key_path  # where a key was looked for
        self._engine: AsyncEngine | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None  # the appends' (`_writer`)
        # The head (position, hash, mac) this store committed last and the versions of streams
        # at it (`_transact_known`).
        self._head: tuple[int, str, str | None] | None = None
        self._versions: dict[str, int] = {}
        self._readonly = False
        self._pending: list[_Request] = []
        self._commit_lock = asyncio.Lock()
        self.append_observer: Callable[[float], None] | None = None  # as `SqliteEventStore.append_observer`
        self._daemons_made = False  # the `daemons` table exists (this store made or saw it)

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.where!r})"  # never the URL: it carries the password

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self, create: bool = True, readonly: bool = False) -> PostgresEventStore:
        """Connect. `create` (davitd): make the tables if the database has none. Without it
        the log must be there at this davit's schema. `readonly`: every transaction is READ ONLY."""
        options = "-c default_transaction_read_only=on" if readonly else "-c synchronous_commit=on"
        self._readonly = readonly
        self._engine = create_async_engine(
            self._url,
            pool_size=4,
            max_overflow=8,
            pool_pre_ping=True,
            # Always READ COMMITTED, whatever the database's or role's default: the head must be
            # read in a statement after the lock's (a snapshot of its own), not in one taken
            # when the transaction began and the lock was still held by another writer.
            isolation_level="READ COMMITTED",
            connect_args={"options": options, "connect_timeout": 10, "application_name": "davit"},
        )
        try:
            async with self._mapped(), self._engine.begin() as conn:
                if create and not readonly:
                    await conn.exec_driver_sql(_LOCK_SQL, (LOCK_KEY,))  # two daemons starting at once
                current = await self._probe(conn, fresh_ok=create and not readonly)
                if current is None:
                    for statement in _DDL:
                        await conn.exec_driver_sql(statement)
                    await conn.exec_driver_sql(
                        "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)", (SCHEMA_VERSION, self._clock())
                    )
                    await conn.exec_driver_sql("INSERT INTO chain_head (id, position, hash) VALUES (1, 0, %s)", (s.GENESIS_HASH,))
                if create and not readonly and self._key is not None:
                    await self._seal(conn, self._key)  # (under the lock: two daemons sealing at once write one marker)
                elif not readonly:
                    mac = tuple((await conn.exec_driver_sql(_HEAD_SQL)).one())[2]
                    check_writer_key(self.where, mac is not None, self._key, self._key_path)
        except BaseException:
            await self.close()
            raise
        return self

    async def _probe(self, conn: AsyncConnection, fresh_ok: bool) -> int | None:
        rows = await conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            (list(_TABLES),),
        )
        names = {r[0] for r in rows}
        if not names and fresh_ok:
            return None
        if not names:
            raise EventLogMissing(self.where)  # type: ignore[arg-type]  # (names where, as path names the file)
        missing = [t for t in _TABLES if t not in names]
        if missing:
            raise EventLogDamaged(self.where, f"table {', '.join(missing)} missing")  # type: ignore[arg-type]
        current = (await conn.exec_driver_sql("SELECT MAX(version) FROM schema_version")).scalar()
        if current is None:
            raise EventLogDamaged(self.where, "no schema version recorded")  # type: ignore[arg-type]
        if int(current) > SCHEMA_VERSION:
            raise EventLogTooNew(
                f"{self.where} has log schema {current}, newer than this davit ({SCHEMA_VERSION}); upgrade davit"
            )
        if (await conn.exec_driver_sql(_HEAD_SQL)).first() is None:
            raise EventLogDamaged(self.where, "chain_head has no row")  # type: ignore[arg-type]
        return int(current)

    async def _seal(self, conn: AsyncConnection, key: LogKey) -> None:
        """Make this log keyed under `key` if it is not (as `SqliteEventStore._seal`): one keyed
        marker event whose hash covers the plain head, then the head sealed."""
        marker = (await conn.exec_driver_sql(_MARKER_SQL, (MARKER_STREAM, MARKER_TYPE))).first()
        position, prev_hash, _mac = tuple((await conn.exec_driver_sql(_HEAD_SQL)).one())
        data = None if marker is None else json_object(marker.data, marker.position)
        new = marker_to_write(self.where, key, data, (int(position), prev_hash))
        if new is None:
            return
        version = (await conn.exec_driver_sql("SELECT MAX(version) FROM events WHERE stream = %s", (MARKER_STREAM,))).scalar()
        row = self._row(new, MARKER_STREAM, int(version or 0) + 1, int(position) + 1, prev_hash, key.secret)
        head = seal_head(key.secret, row[0], row[-1])
        await conn.exec_driver_sql(_WRITE_SQL, (*_columns([row]), row[0], row[-1], head))
        await conn.exec_driver_sql(_NOTIFY_SQL)

    async def log_head(self) -> tuple[int, str, bool]:
        """The head (position, hash) and whether the log is keyed, as `sqlite.log_head` gives
        them: for making a key that will seal this head."""
        async with self._reading() as conn:
            position, hash_, _mac = tuple((await conn.exec_driver_sql(_HEAD_SQL)).one())
            keyed = (await conn.exec_driver_sql(_MARKER_SQL, (MARKER_STREAM, MARKER_TYPE))).first() is not None
        return int(position), str(hash_), keyed

    async def close(self) -> None:
        await self._drop_writer()
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None

    async def __aenter__(self) -> PostgresEventStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- appends (`sqlappends.GroupCommitAppends`; here the transaction) ------------------------

    def _refuse_appends(self) -> None:
        if self._readonly:
            raise EventStoreError(f"the event log {self.where} was opened read-only; this command appends to it")

    async def _transact(self, batch: list[_Request]) -> list[Result]:
        """One transaction for the batch on the writer's own connection, pipelined. When this
        store wrote (or read) the head last and knows the version of every stream the batch
        appends to, one round trip (`_transact_known`); else, or if that finds the head moved,
        two (`_transact_looked_up`). Either way the rows are linked once for the batch and sent
        as one statement with fixed text (arrays, not a row of placeholders per event), so
        psycopg prepares it once."""
        conn = await self._writer()
        try:
            results = await self._transact_known(conn, batch)
            if results is None:
                results = await self._transact_looked_up(conn, batch)
        except BaseException:
            self._forget_head()
            if conn.broken or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                await self._drop_writer()  # never reuse a connection left mid-transaction or broken
            raise
        return results

    async def _transact_looked_up(self, conn: psycopg.AsyncConnection[Any], batch: list[_Request]) -> list[Result]:
        """(BEGIN, the log's lock, one SELECT of the head, the batch's streams' versions and
        its known event ids), then (the rows and the head's UPDATE in one INSERT, COMMIT)."""
        streams = sorted({part.stream for r in batch for part in r.parts})
        ids = [e.event_id for r in batch for part in r.parts for e in part.events]
        async with conn.pipeline(), conn.transaction():
            await conn.execute(_LOCK_SQL, (LOCK_KEY,))
            # A statement after the lock's: its snapshot shows the previous holder's commit.
            cursor = await conn.execute(_LOOKUP_SQL, (streams, ids))
            head = await cursor.fetchone()
            if head is None:
                raise EventLogDamaged(self.where, "chain_head has no row")  # type: ignore[arg-type]
            position, prev_hash, mac, stored_versions, known = head
            secret = link_key(self.where, mac, self._key)
            versions = dict.fromkeys(streams, 0)
            versions.update((k, int(v)) for k, v in stored_versions.items())
            replays = {k: int(v) for k, v in known.items()}
            if (int(position), prev_hash, mac) != self._head:
                self._forget_head()  # another writer appended: what was known of streams may be stale
            self._versions.update(versions)
            rows, results, position, prev_hash = link_batch(
                batch, versions, replays, int(position), prev_hash, self._linker(secret)
            )
            mac = seal_head(secret, position, prev_hash) if rows else mac
            if rows:
                await conn.execute(_WRITE_SQL, (*_columns(rows), position, prev_hash, mac))
                await conn.execute(_NOTIFY_SQL)
        self._knew(position, prev_hash, mac, versions)
        return results

    async def _transact_known(self, conn: psycopg.AsyncConnection[Any], batch: list[_Request]) -> list[Result] | None:
        """(BEGIN, the log's lock, the rows linked on from the head this store knows, COMMIT) in
        one round trip: the INSERT writes only if the head is still that one (nobody appended
        since, so the versions known are the stored ones). None, having written nothing, if
        the head moved, a stream is unknown here, or an event id is already stored (a retry:
        the UNIQUE index refuses it; the lookup finds it and answers with its positions)."""
        if self._head is None or any(part.stream not in self._versions for r in batch for part in r.parts):
            return None
        head_position, head_hash, head_mac = self._head
        secret = link_key(self.where, head_mac, self._key)
        versions = {part.stream: self._versions[part.stream] for r in batch for part in r.parts}
        rows, results, position, prev_hash = link_batch(batch, versions, {}, head_position, head_hash, self._linker(secret))
        if not rows:
            return None  # every request refused by versions known here, maybe stale: only a lookup may say so
        mac = seal_head(secret, position, prev_hash)
        try:
            async with conn.pipeline(), conn.transaction():
                await conn.execute(_LOCK_SQL, (LOCK_KEY,))
                known = (head_position, head_hash, head_mac, *_columns(rows), position, prev_hash, mac)
                cursor = await conn.execute(_WRITE_KNOWN_SQL, known)
                await conn.execute(_NOTIFY_SQL)  # (when the head moved, a reader woken for nothing reads nothing)
                # (fetched only after the pipeline's end, COMMIT included: one round trip)
            written = await cursor.fetchone()
        except psycopg.errors.UniqueViolation:
            self._forget_head()  # (the transaction block rolled back: the connection is idle)
            return None
        if not written or not written[0]:
            self._forget_head()
            return None
        self._knew(position, prev_hash, mac, versions)
        return results

    def _knew(self, position: int, hash_: str, mac: str | None, versions: dict[str, int]) -> None:
        """The head this store just committed, and the streams' versions at it."""
        if len(self._versions) > _KNOWN_STREAMS:
            self._versions.clear()
        self._head = (position, hash_, mac)
        self._versions.update(versions)

    def _forget_head(self) -> None:
        self._head = None
        self._versions.clear()

    async def _writer(self) -> psycopg.AsyncConnection[Any]:
        """The appends' own connection (not the pool's: no ping, no checkout per batch), opened
        at the first append and again after a failure broke it."""
        if self._conn is not None and not (self._conn.broken or self._conn.closed):
            return self._conn
        await self._drop_writer()
        self._conn = await psycopg.AsyncConnection.connect(
            **self._connect_params(),
            autocommit=True,  # transactions are explicit (`conn.transaction()`)
            options="-c synchronous_commit=on -c default_transaction_isolation=read\\ committed",
            connect_timeout=10,
            application_name="davit",
        )
        return self._conn

    async def _drop_writer(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)

    def _connect_params(self) -> dict[str, Any]:
        """psycopg's connect arguments for this log's URL (connections outside the pool)."""
        assert self._engine is not None
        _cargs, params = self._engine.dialect.create_connect_args(self._engine.url)
        params.pop("context", None)  # (SQLAlchemy's adapters: these connections use psycopg's own)
        return dict(params)

    def _row(
        self, new: NewEvent, stream: str, version: int, position: int, prev_hash: str, secret: bytes | None = None
    ) -> tuple[Any, ...]:
        return chain_row(new, stream, version, position, prev_hash, self._clock(), secret)

    def _linker(self, secret: bytes | None) -> Callable[[NewEvent, str, int, int, str], tuple[Any, ...]]:
        """`link_batch`'s row maker, keyed under `secret` (None: the plain chain)."""

        def row(new: NewEvent, stream: str, version: int, position: int, prev_hash: str) -> tuple[Any, ...]:
            return self._row(new, stream, version, position, prev_hash, secret)

        return row

    def _map_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, DavitError):
            return exc
        mapped = _server_failure(exc, self.where) or EventStoreError(
            f"event log write failed: {type(exc).__name__}: {_first_line(exc)}"
        )
        mapped.__cause__ = exc
        return mapped

    # --- reads -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        assert self._engine is not None
        async with self._mapped(), self._engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _mapped(self) -> AsyncIterator[None]:
        """The server's and driver's errors as davit's, naming `where` (never the URL)."""
        try:
            yield
        except DavitError:
            raise
        except (DBAPIError, psycopg.Error, OSError) as exc:
            failure = _server_failure(exc, self.where)
            if failure is not None:
                raise failure from None
            raise EventStoreError(f"event log {self.where}: {_first_line(exc)}") from None
        except (ValueError, TypeError) as exc:
            raise EventLogDamaged(self.where, f"unexpected content ({_first_line(exc)})") from None  # type: ignore[arg-type]

    async def tail(
        self, after_position: int = 0, stream_prefix: str | None = None, poll_seconds: float = 0.2
    ) -> AsyncIterator[StoredEvent]:
        """Every event after `after_position`, in order, then new ones as they are committed
        (safe by the position lock: see the module's docstring). Woken by the writers' NOTIFY
        on a connection of its own that LISTENs (opened before the first read, so a commit
        between a read and the wait still wakes it), and reading again every `poll_seconds`
        anyway (a writer of an older davit does not notify; a pooler may refuse LISTEN: then
        polling alone)."""
        listener = await self._listener()
        try:
            while True:
                rows = await self.read_all(after_position, 1000, stream_prefix)
                for row in rows:
                    yield row
                    after_position = row.position
                if rows:
                    continue
                if listener is None:
                    await asyncio.sleep(poll_seconds)
                    continue
                try:
                    async for _ in listener.notifies(timeout=poll_seconds, stop_after=1):
                        pass
                except psycopg.Error:  # the listening connection lost: poll from now on
                    await _close(listener)
                    listener = None
        finally:
            if listener is not None:
                await _close(listener)

    async def _listener(self) -> psycopg.AsyncConnection[Any] | None:
        """A connection LISTENing on `CHANNEL`; None if it cannot be had (polling then)."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                **self._connect_params(), autocommit=True, connect_timeout=10, application_name="davit tail"
            )
        except psycopg.Error:
            return None
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error:
            await _close(conn)
            return None
        return conn

    # --- the daemons' heartbeats (davit/domain/daemons.py) ------------------------------------

    async def beat(self, beat: DaemonBeat) -> None:
        """Replace this daemon's row in `daemons` (made by the first beat: a log made before
        daemons beat here gets it then, and its schema version does not change)."""
        assert self._engine is not None
        runs = json.dumps(beat.runs[:MAX_BEAT_RUNS])
        async with self._mapped(), self._engine.begin() as conn:
            if not self._daemons_made:
                # (a lock of its own: two daemons making the table at once would collide in the catalog)
                await conn.exec_driver_sql(_LOCK_SQL, (DAEMONS_LOCK_KEY,))
                await conn.exec_driver_sql(_DAEMONS_DDL)
            await conn.exec_driver_sql(
                _BEAT_SQL, (beat.name, beat.version, beat.pid, beat.host, beat.started_at, runs, len(beat.runs), beat.log_problem)
            )
        self._daemons_made = True

    async def daemons(self) -> list[DaemonSeen]:
        """Every daemon's last beat, by name; ages by the server's clock. None beat yet: []."""
        async with self._reading() as conn:
            if (await conn.exec_driver_sql("SELECT to_regclass('daemons')")).scalar() is None:
                return []
            rows = (await conn.exec_driver_sql(_DAEMONS_SQL)).all()
        return [_seen(tuple(row)) for row in rows]

    # --- integrity ---------------------------------------------------------------------------

    async def integrity_check(self) -> str:
        """What stands here for SQLite's `PRAGMA integrity_check`: "ok" unless the server has
        counted page checksum failures in this database (`pg_stat_database.checksum_failures`;
        NULL, so "ok", on a cluster made without `--data-checksums`). Every row's content is
        checked by `verify_chain`."""
        async with self._reading() as conn:
            failures = (
                await conn.exec_driver_sql("SELECT checksum_failures FROM pg_stat_database WHERE datname = current_database()")
            ).scalar()
        return "ok" if not failures else f"{failures} page checksum failures in {self.where}"

    async def verify_chain(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport:
        """Recompute the chain from the first event, in one snapshot (REPEATABLE READ, so the
        head read at the end belongs to the rows read); name the first position that breaks it.
        Keyed as SQLite's (`keying.ChainWalk`): a keyed log needs `key`."""
        assert self._engine is not None
        walk = ChainWalk(self.where, key, key_path)
        async with self._mapped(), self._engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                result = await conn.stream(select(s.events).order_by(s.events.c.position).execution_options(yield_per=2000))
                async for row in result:
                    broken = walk.row(row)
                    if broken is not None:
                        return broken
                position, hash_, mac = tuple((await conn.exec_driver_sql(_HEAD_SQL)).one())
        return walk.head(int(position), hash_, mac)


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception:  # closing a broken connection: nothing more to do
        pass


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The rows as one list a column, for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)]


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def _server_failure(exc: BaseException, where_: str) -> DavitError | None:
    """`EventLogFull` / `EventLogUnavailable` for what passes once the server can take writes
    again (a full disk, a lost connection, a server shutting down or read-only); None else."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
        return EventLogFull(where_, _first_line(cause))
    retryable = (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        psycopg.errors.ReadOnlySqlTransaction,
        psycopg.errors.AdminShutdown,
        psycopg.errors.CannotConnectNow,
        OSError,
    )
    if isinstance(cause, retryable) and not isinstance(cause, psycopg.errors.InvalidPassword):
        return EventLogUnavailable(where_, _first_line(cause))
    return None


if TYPE_CHECKING:  # mypy checks here that the PostgreSQL store serves both ports
    _serves: type[EventLog] = PostgresEventStore

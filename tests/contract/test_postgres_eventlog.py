"""The PostgreSQL event store keeps the event log's contract (tests/contract/eventlog_contract.py)
on the postgres peer: one fresh database for this module, emptied before each test; the writer
is davitd's kind of store, the reader the CLI's (read-only transactions, its own connections).
With CI=true a missing peer fails these tests (tests/peers/fixtures.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from davit.domain.daemons import DaemonBeat, DaemonSeen
from davit.domain.errors import ConcurrencyError
from davit.eventstore import postgres as pg
from davit.eventstore.chain import ChainReport
from davit.eventstore.logkey import LogKey
from davit.eventstore.postgres import MAX_BEAT_RUNS, PostgresEventStore
from tests.contract.eventlog_contract import (
    ROW_COLUMNS,
    EventLogContract,
    KeyedEventLogContract,
    KeyedTampering,
    Row,
    Tampering,
    forged,
    new,
    run,
)
from tests.peers.state import PostgresPeer

_TAMPER = {
    "edit": """UPDATE events SET data = '{"n":999}' WHERE position = %s""",
    "delete": "DELETE FROM events WHERE position = %s",
    "delete-newest": "DELETE FROM events WHERE position >= %s",
}


def admin(peer: PostgresPeer, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname=dbname, autocommit=True)


class PostgresLog:
    def __init__(self, peer: PostgresPeer, database: str) -> None:
        self.peer = peer
        self.url = URL.create("postgresql+psycopg", peer.user, peer.password, peer.host, peer.port, database)

    @asynccontextmanager
    async def writer(self, key: LogKey | None = None) -> AsyncIterator[PostgresEventStore]:
        async with PostgresEventStore(self.url, key=key) as store:
            yield store

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[PostgresEventStore]:
        store = await PostgresEventStore(self.url).open(create=False, readonly=True)
        try:
            yield store
        finally:
            await store.close()

    def tamper(self, how: Tampering | KeyedTampering, position: int) -> None:
        with admin(self.peer, str(self.url.database)) as conn:
            if how == "forge":
                rows: list[Row] = conn.execute(f"SELECT {ROW_COLUMNS} FROM events ORDER BY position").fetchall()
                changed, head = forged(rows, position)
                with conn.cursor() as cursor:
                    cursor.executemany("UPDATE events SET data = %s, prev_hash = %s, hash = %s WHERE position = %s", changed)
                conn.execute("UPDATE chain_head SET position = %s, hash = %s WHERE id = 1", head)
            elif how == "rewind":
                conn.execute("DELETE FROM events WHERE position >= %s", (position,))
                conn.execute(
                    "UPDATE chain_head SET position = %s, hash = (SELECT hash FROM events WHERE position = %s) WHERE id = 1",
                    (position - 1, position - 1),
                )
            else:
                conn.execute(_TAMPER[how], (position,))

    async def verify(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport:
        store = await PostgresEventStore(self.url).open(create=False, readonly=True)
        try:
            return await store.verify_chain(key, key_path)
        finally:
            await store.close()


@pytest.fixture(scope="module")
def database(postgres_peer: PostgresPeer) -> Iterator[str]:
    name = f"davit_log_{uuid.uuid4().hex[:12]}"
    with admin(postgres_peer) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin(postgres_peer) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def log(postgres_peer: PostgresPeer, database: str) -> PostgresLog:
    """An empty log: the module's database without the tables (the writer makes them)."""
    with admin(postgres_peer, database) as conn:
        conn.execute("DROP TABLE IF EXISTS events, chain_head, schema_version")
    return PostgresLog(postgres_peer, database)


class TestPostgresEventLog(EventLogContract, KeyedEventLogContract):
    @pytest.fixture
    def keyed_log(self, log: PostgresLog) -> PostgresLog:
        return log


class TestSeveralWritersOnOnePostgresLog:
    """What only a shared server shows: writers with connections of their own (several davitd,
    a CLI request) each group-committing, so only the log's advisory lock orders them."""

    def test_of_writers_with_their_own_connections_to_one_stream_exactly_one_wins(self, log: PostgresLog) -> None:
        async def go() -> None:
            async with log.writer() as a, log.writer() as b, log.writer() as c:
                stores = (a, b, c)
                results = await asyncio.gather(
                    *(stores[i % 3].append("s", 0, [new(who=i)]) for i in range(12)), return_exceptions=True
                )
                assert sum(isinstance(r, list) for r in results) == 1
                assert sum(isinstance(r, ConcurrencyError) for r in results) == 11
                assert await a.head_position() == 1 and len(await c.read_stream("s")) == 1

        run(go())

    def test_a_tail_misses_nothing_while_four_writers_with_their_own_connections_append(self, log: PostgresLog) -> None:
        writers, rounds = 4, 50
        total = writers * rounds * 2  # two events per append

        async def go() -> None:
            async with log.writer():
                pass  # davitd made the log before anyone tails it
            async with log.reader() as reader:

                async def tail() -> list[int]:
                    seen: list[int] = []
                    async for event in reader.tail(0, poll_seconds=0.005):
                        seen.append(event.position)
                        if len(seen) == total:
                            return seen
                    raise AssertionError("a tail ended")

                async def write(k: int) -> None:
                    async with log.writer() as store:
                        for i in range(rounds):
                            await store.append(f"w{k}", 2 * i, [new(k=k, i=i), new(k=k, i=i)])

                tailer = asyncio.create_task(tail())
                await asyncio.gather(*(write(k) for k in range(writers)))
                assert await asyncio.wait_for(tailer, 30) == list(range(1, total + 1))
            assert (await log.verify()).ok

        run(go())


def test_a_tail_waiting_for_events_is_woken_by_a_commit_not_by_its_next_poll(log: PostgresLog) -> None:
    """`davit history --follow` on PostgreSQL: the writers NOTIFY, the tail LISTENs. With a poll
    of a minute, only the notification can bring the second event within the wait below."""

    async def go() -> None:
        async with log.writer() as store:
            await store.append("s", 0, [new(n=0)])
            async with log.reader() as reader:
                seen: list[int] = []

                async def follow() -> None:
                    async for event in reader.tail(0, poll_seconds=60):
                        seen.append(event.position)
                        if len(seen) == 2:
                            return

                task = asyncio.create_task(follow())
                while not seen:  # it has read the log and waits
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)
                started = time.monotonic()
                await store.append("s", 1, [new(n=1)])
                await asyncio.wait_for(task, 10)
                assert seen == [1, 2]
                assert time.monotonic() - started < 10

    run(go())


class TestTheHeadAWriterRemembers:
    """A store appends in one round trip while the head is the one it committed last, with the
    stream versions it knew then (`PostgresEventStore._transact_known`); whatever another writer
    did since must make it look again, never answer from what it remembers."""

    def test_a_stream_another_writer_appended_to_is_appended_at_its_stored_version(self, log: PostgresLog) -> None:
        async def go() -> None:
            async with log.writer() as a, log.writer() as b:
                assert await a.append("s", 0, [new(n=1)]) == [1]  # a now knows s at version 1
                assert await b.append("s", 1, [new(n=2)]) == [2]
                assert await a.append("s", 2, [new(n=3)]) == [3]  # not refused by the version a knew
                with pytest.raises(ConcurrencyError) as refused:
                    await b.append("s", 2, [new(n=4)])
                assert refused.value.actual == 3
                with pytest.raises(ConcurrencyError) as again:
                    await a.append("s", 1, [new(n=5)])  # stale for real: refused with the stored version
                assert again.value.actual == 3
                assert [e.data["n"] for e in await b.read_stream("s")] == [1, 2, 3]
            assert (await log.verify()).ok

        run(go())

    def test_an_event_id_stored_behind_the_writers_back_is_answered_as_a_retry_and_the_writer_goes_on(
        self, log: PostgresLog
    ) -> None:
        landed = new(n=1)

        async def go() -> None:
            async with log.writer() as store:
                await store.append("s", 0, [new(n=0)])  # head and s known: the next append takes one round trip
                with admin(log.peer, str(log.url.database)) as conn:  # its id stored, the head left as it was
                    conn.execute(
                        "INSERT INTO events (position, event_id, stream, version, type, schema, data, recorded_at,"
                        " prev_hash, hash) VALUES (1000, %s, 'elsewhere', 1, 'Thing', 1, '{}', 'then', 'x', 'y')",
                        (landed.event_id,),
                    )
                assert await store.append("s", 1, [landed]) == [1000]  # the UNIQUE index refused the row
                assert await store.append("s", 1, [new(n=2)]) == [2]  # same connection, usable
                assert [e.position for e in await store.read_stream("s")] == [1, 2]

        run(go())


@pytest.fixture
def strict_database_default(log: PostgresLog) -> Iterator[PostgresLog]:
    """The log's database made SERIALIZABLE by default, as a DBA may set it for an application's database."""
    database = sql.Identifier(str(log.url.database))
    with admin(log.peer) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = 'serializable'").format(database))
    try:
        yield log
    finally:
        with admin(log.peer) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_isolation").format(database))


def test_writers_on_a_database_whose_default_isolation_is_serializable_still_all_append(
    strict_database_default: PostgresLog,
) -> None:
    """The lock-then-read-the-head order needs each statement's own snapshot (READ COMMITTED):
    under a database default of REPEATABLE READ or SERIALIZABLE the snapshot would be taken
    before the lock was granted, the head read stale, and a writer that waited would fail."""
    log = strict_database_default
    writers, rounds = 3, 15

    async def go() -> None:
        async def write(k: int) -> None:
            async with log.writer() as store:
                for i in range(rounds):
                    await store.append(f"w{k}", i, [new(k=k, i=i)])

        await asyncio.gather(*(write(k) for k in range(writers)))
        async with log.reader() as reader:
            assert [e.position for e in await reader.read_all(0)] == list(range(1, writers * rounds + 1))
        assert (await log.verify()).ok

    run(go())


def test_daemons_rows_crafted_by_another_database_user_are_each_read_not_one_failing_the_listing(
    log: PostgresLog,
) -> None:
    """`davit daemons` lists the `daemons` table's rows; a row another user of the database wrote
    (a `runs` that is no JSON list, NULLs where davitd never writes them, a huge list) is read
    as what it can be, and never hides the other daemons (the listing used to raise)."""

    async def go() -> list[DaemonSeen]:
        async with log.writer() as store:
            await store.beat(DaemonBeat("honest", "1", 10, "h", "2026-01-01T00:00:00+00:00", ["r1"]))
        with admin(log.peer, str(log.url.database)) as conn:
            conn.execute("ALTER TABLE daemons ALTER COLUMN version DROP NOT NULL, ALTER COLUMN pid DROP NOT NULL")
            conn.execute("ALTER TABLE daemons ALTER COLUMN host DROP NOT NULL, ALTER COLUMN runs DROP NOT NULL")
            conn.execute("ALTER TABLE daemons ALTER COLUMN beat_at DROP NOT NULL")
            crafted = (
                "INSERT INTO daemons (name, version, pid, host, started_at, runs, runs_count, beat_at) "
                "VALUES (%s, %s, %s, %s, 's', %s, 0, %s)"
            )
            conn.execute(crafted, ("not-json", "1", 1, "h", "{{{", "now"))
            conn.execute(crafted, ("an-object", "1", 1, "h", '{"a": 1}', "now"))
            conn.execute(crafted, ("a-number", "1", 1, "h", "5", "now"))
            conn.execute(crafted, ("nulls", None, None, None, None, None))
            conn.execute(crafted, ("huge", "1", 1, "h", json.dumps([f"r{i}" for i in range(100_000)]), "now"))
        async with log.reader() as reader:
            return await reader.daemons()

    try:
        seen = {s.beat.name: s for s in run(go())}
    finally:
        with admin(log.peer, str(log.url.database)) as conn:
            conn.execute("DROP TABLE IF EXISTS daemons")
    assert sorted(seen) == ["a-number", "an-object", "honest", "huge", "not-json", "nulls"]
    assert seen["honest"].beat.runs == ["r1"] and seen["honest"].age_seconds < 60
    assert seen["not-json"].beat.runs == seen["an-object"].beat.runs == seen["a-number"].beat.runs == []
    assert len(seen["huge"].beat.runs) == MAX_BEAT_RUNS  # (no more than a daemon ever writes)
    nulls = seen["nulls"].beat
    assert (nulls.version, nulls.pid, nulls.host, nulls.runs) == ("", 0, "", [])
    assert seen["nulls"].age_seconds == float("inf")  # never beat: never shown alive


class TestASlowAppender:
    """Commit order is position order (the module docstring of `eventstore/postgres.py`): an
    appender whose transaction stays open holds up the positions after its own, so a tail
    reading "position > last seen" never passes it. (A design that assigns positions otherwise,
    from a sequence or under a commit-order watermark, must give its tail the same test.)"""

    def test_a_tail_does_not_skip_a_slow_appenders_event_while_a_later_append_waits(self, log: PostgresLog) -> None:
        """A slow appender holds its transaction open (position 2 taken, not committed) while
        another appends: the other's append may not commit a later position first (a tail that
        read it would go past 2 and never look back); the tail sees 1, 2, 3, 4 in order."""

        async def go() -> None:
            async with log.writer() as store, log.reader() as reader:
                await store.append("fast", 0, [new(n=0)])
                seen: list[int] = []

                async def follow() -> None:
                    async for event in reader.tail(0, poll_seconds=0.01):
                        seen.append(event.position)
                        if len(seen) == 4:
                            return

                tailer = asyncio.create_task(follow())
                slow = await psycopg.AsyncConnection.connect(**store._connect_params(), autocommit=True)
                try:
                    async with slow.transaction():  # what an appender does, held open
                        await slow.execute(pg._LOCK_SQL, (pg.LOCK_KEY,))
                        head = await (await slow.execute(pg._HEAD_SQL)).fetchone()
                        assert head is not None
                        row = store._row(new(n=1), "slow", 1, int(head[0]) + 1, head[1])
                        await slow.execute(pg._WRITE_SQL, (*pg._columns([row]), row[0], row[-1], None))
                        fast = asyncio.create_task(store.append("fast", 1, [new(n=2), new(n=3)]))
                        await asyncio.sleep(0.5)
                        assert not fast.done()  # it waits for the lock, position unassigned
                        assert seen == [1]
                finally:
                    await slow.close()
                assert await asyncio.wait_for(fast, 10) == [3, 4]
                await asyncio.wait_for(tailer, 10)
                assert seen == [1, 2, 3, 4]
            assert (await log.verify()).ok

        run(go())

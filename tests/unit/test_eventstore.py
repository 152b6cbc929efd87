"""The event log's guarantees (GUARANTEES.md 1-6) against the real SQLite store."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import uuid
from pathlib import Path

import pytest

from davit.domain.errors import ConcurrencyError
from davit.domain.events import NewEvent, StreamAppend
from davit.eventstore.sqlite import SqliteEventStore


def new(type_: str = "Thing", **data: object) -> NewEvent:
    return NewEvent(uuid.uuid4().hex, type_, dict(data))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "davit.db"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def _create(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db):
            pass

    run(go())


def test_append_with_a_stale_expected_version_is_rejected_and_writes_nothing(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            await store.append("s", 0, [new(n=1)])
            head = await store.head_position()
            with pytest.raises(ConcurrencyError) as err:
                await store.append("s", 0, [new(n=2), new(n=3)])
            assert (err.value.expected, err.value.actual) == (0, 1)
            assert await store.head_position() == head
            assert [e.data["n"] for e in await store.read_stream("s")] == [1]

    run(go())


def test_of_concurrent_appenders_to_one_stream_exactly_one_wins(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            results = await asyncio.gather(*(store.append("s", 0, [new(who=i)]) for i in range(20)), return_exceptions=True)
            winners = [r for r in results if not isinstance(r, BaseException)]
            losers = [r for r in results if isinstance(r, ConcurrencyError)]
            assert len(winners) == 1 and len(losers) == 19
            assert len(await store.read_stream("s")) == 1

    run(go())


def _append_from_process(db: str, who: int, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:  # type: ignore[name-defined]
    async def go() -> str:
        async with SqliteEventStore(Path(db)) as store:
            barrier.wait()
            try:
                await store.append("contested", 0, [new(who=who)])
                return "won"
            except ConcurrencyError:
                return "lost"

    out.put(asyncio.run(go()))


def test_of_appenders_in_separate_processes_exactly_one_wins(db: Path) -> None:
    _create(db)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_append_from_process, args=(str(db), i, barrier, out)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(out.get(timeout=5) for _ in procs)
    assert outcomes == ["lost", "lost", "lost", "won"]


def test_appending_the_same_event_twice_records_it_once(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            event = new(n=1)
            first = await store.append("s", 0, [event])
            retry = await store.append("s", 0, [event])  # the acknowledgement was lost; the writer retries
            assert first == retry
            assert len(await store.read_stream("s")) == 1

    run(go())


def test_an_atomic_append_to_two_streams_writes_both_or_neither(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            await store.append("b", 0, [new()])
            with pytest.raises(ConcurrencyError):
                await store.append_atomic([StreamAppend("a", 0, (new(),)), StreamAppend("b", 0, (new(),))])
            assert await store.stream_version("a") == 0
            await store.append_atomic([StreamAppend("a", 0, (new(),)), StreamAppend("b", 1, (new(),))])
            assert (await store.stream_version("a"), await store.stream_version("b")) == (1, 2)

    run(go())


def test_an_acknowledged_append_survives_reopening_and_the_chain_verifies(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            for i in range(50):
                await store.append("s", i, [new(n=i)])
        async with SqliteEventStore(db) as store:
            assert len(await store.read_stream("s")) == 50
            report = await store.verify_chain()
            assert report.ok and report.checked == 50
            assert await store.integrity_check() == "ok"

    run(go())


def _fill(db: Path, n: int) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            for i in range(n):
                await store.append(f"s{i % 3}", i // 3, [new(n=i)])

    run(go())


def _verify(db: Path):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with SqliteEventStore(db) as store:
            return await store.verify_chain()

    return run(go())


def test_an_edited_row_is_found_by_the_hash_chain(db: Path) -> None:
    _fill(db, 10)
    with sqlite3.connect(db) as conn:
        conn.execute("""UPDATE events SET data = '{"n":999}' WHERE position = 6""")
    report = _verify(db)
    assert not report.ok and report.first_bad_position == 6


def test_a_deleted_row_is_found_by_the_hash_chain(db: Path) -> None:
    _fill(db, 10)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position = 4")
    report = _verify(db)
    assert not report.ok and report.first_bad_position == 4


def test_deleting_the_newest_events_is_found_too(db: Path) -> None:
    _fill(db, 10)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position >= 9")
    report = _verify(db)
    assert not report.ok and report.first_bad_position == 9


def test_a_tailing_reader_sees_every_event_once_in_order_while_writers_append(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as writer, SqliteEventStore(db) as reader:
            seen: list[int] = []

            async def tail() -> None:
                async for event in reader.tail(0, poll_seconds=0.01):
                    seen.append(event.position)
                    if len(seen) == 400:
                        return

            async def write(stream: str) -> None:
                for i in range(100):
                    await writer.append(stream, i, [new(i=i)])

            tailer = asyncio.create_task(tail())
            await asyncio.gather(*(write(f"w{k}") for k in range(4)))
            await asyncio.wait_for(tailer, 30)
            assert seen == list(range(1, 401))

    run(go())


def _hammer(db: str, seconds: float) -> None:
    async def go() -> None:
        async with SqliteEventStore(Path(db)) as store:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            v = 0
            while loop.time() < end:
                await asyncio.gather(*(store.append(f"h{k}", v, [new(v=v)]) for k in range(8)))
                v += 1

    asyncio.run(go())


def test_readers_in_another_process_never_see_database_is_locked(db: Path) -> None:
    _create(db)
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_hammer, args=(str(db), 3.0))
    writer.start()

    async def read_while_writing() -> int:
        reads = 0
        async with SqliteEventStore(db) as store:
            while writer.is_alive():
                await store.read_all(0, 500)
                await store.head_position()
                reads += 1
        return reads

    reads = run(read_while_writing())  # an OperationalError("database is locked") would raise here
    writer.join(30)
    assert writer.exitcode == 0 and reads > 10
    assert _verify(db).ok


def test_positions_only_grow_across_streams(db: Path) -> None:
    async def go() -> None:
        async with SqliteEventStore(db) as store:
            got = []
            for i in range(30):
                got += await store.append(f"s{i % 4}", 2 * (i // 4), [new(), new()])
            assert got == sorted(got) and len(set(got)) == 60

    run(go())


def test_the_schema_version_is_recorded_once_and_a_newer_log_is_refused(db: Path) -> None:
    from davit.eventstore.sqlite import EventStoreError

    _create(db)
    _create(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,), (2,)]
        conn.execute("INSERT INTO schema_version VALUES (99, 'from the future')")
    with pytest.raises(EventStoreError, match="newer than this davit"):
        _create(db)


@pytest.mark.parametrize("mode", ["daemon", "request", "reader", "key"])
def test_a_fifo_planted_at_the_log_is_refused_at_once_instead_of_hanging_the_open(db: Path, mode: str) -> None:
    """SQLite opens the log with a blocking open(2): a FIFO at davit.db hung every reading
        `davit` command forever (as one at davit.toml hung a reload), and davitd's start took the
        read error for an outage and waited, silently, for the log to come back; before that, its
    reading of the log's head to make a log key (`log_head`, "key") hung it forever."""
    import os
    import subprocess
    import sys
    import textwrap

    db.parent.mkdir(parents=True)
    os.mkfifo(db)
    args = {"daemon": "", "request": "create=False", "reader": "create=False, readonly=True", "key": ""}[mode]
    opening = "log_head(store.path)" if mode == "key" else f"await store.open({args})"
    # in a child: a hang is a timeout here, not a wedged test run
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from davit.eventstore.sqlite import EventLogDamaged, SqliteEventStore, log_head
        async def go():
            store = SqliteEventStore(Path({str(db)!r}))
            try:
                {opening}
            except EventLogDamaged as exc:
                print(exc)
                return
            await store.close()
            print("opened")
        asyncio.run(go())
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"opening the log ({mode}) with a FIFO in its place hung")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"event log {db} is damaged: it is a FIFO, not a regular file; not opened"


def test_the_events_an_append_gives_back_are_those_a_read_of_the_stream_gives(db: Path) -> None:
    """A run's recorder folds what the append gives back instead of reading it (one read less
    per event): it must be exactly what replaying the log folds, hash and time included, and a
    retried append that had landed gives the events it wrote then."""

    async def go() -> None:
        async with SqliteEventStore(db) as store:
            await store.append("other", 0, [new(n=0)])
            events = [new("Started", step="store", nested={"b": [1, 2], "a": None}), new("Done", n=2)]
            given = await store.append_read_back("s", 0, events)
            assert given == await store.read_stream("s")
            assert [e.hash for e in given] == [e.hash for e in await store.read_stream("s")]
            again = await store.append_read_back("s", 0, events)  # the retry after a lost acknowledgement
            assert again == given and await store.head_position() == 3
            both = await store.append_atomic_read_back([StreamAppend("s", 2, (new(n=3),)), StreamAppend("t", 0, (new(n=4),))])
            assert both == (await store.read_stream("s", 3)) + (await store.read_stream("t"))

    run(go())

"""What every event store promises (the ports `RunLog` and `LogReader` in
`davit/domain/ports.py`; GUARANTEES.md 1, 2, 4 and 6), as one set of tests.

Each store's test module subclasses `EventLogContract` and provides a `log` fixture: a fresh,
empty log of that store, as a `LogUnderTest` (below). `log.writer()` opens it for appends;
`log.reader()` opens a second handle on the same log (another connection for a database, the
same object in memory), so a tailing reader is tested the way `davit history --follow` reads
while davitd writes. `log.tamper` edits or removes rows behind the store's back, and
`log.verify` runs the store's own chain check.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import pytest

from davit.domain.errors import ConcurrencyError, EventStoreError
from davit.domain.events import NewEvent, StoredEvent, StreamAppend
from davit.domain.ports import EventLog, LogReader
from davit.eventstore.chain import MARKER_STREAM, MARKER_TYPE, ChainReport, canonical_json, event_hash, key_id
from davit.eventstore.logkey import LogKey, LogKeyError
from davit.eventstore.schema import GENESIS_HASH

T = TypeVar("T")
Tampering = Literal["edit", "delete", "delete-newest"]


class LogUnderTest(Protocol):
    def writer(self) -> AbstractAsyncContextManager[EventLog]: ...

    def reader(self) -> AbstractAsyncContextManager[LogReader]: ...

    def tamper(self, how: Tampering, position: int) -> None:
        """`edit`: change the data of the event at `position`, keeping its hash; `delete`: remove
        it; `delete-newest`: remove it and every later one (the chain head stays)."""
        ...

    async def verify(self) -> ChainReport: ...


def new(type_: str = "Thing", **data: Any) -> NewEvent:
    return NewEvent(uuid.uuid4().hex, type_, dict(data))


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 60)  # a hang fails the test instead of the run

    return asyncio.run(main())


def with_writer(log: LogUnderTest, fn: Callable[[EventLog], Awaitable[T]]) -> T:
    async def go() -> T:
        async with log.writer() as store:
            return await fn(store)

    return run(go())


async def fill(store: EventLog, n: int, streams: int = 3, prefix: str = "s") -> None:
    for i in range(n):
        await store.append(f"{prefix}{i % streams}", i // streams, [new(n=i)])


class EventLogContract:
    # --- optimistic concurrency (GUARANTEES 1) ---------------------------------------------

    def test_an_append_with_a_stale_expected_version_is_refused_and_writes_nothing(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            await store.append("s", 0, [new(n=1)])
            with pytest.raises(ConcurrencyError) as refused:
                await store.append("s", 0, [new(n=2), new(n=3)])
            assert (refused.value.stream, refused.value.expected, refused.value.actual) == ("s", 0, 1)
            with pytest.raises(ConcurrencyError):
                await store.append("s", 5, [new(n=4)])  # ahead of the stream is as wrong as behind it
            assert await store.head_position() == 1 and await store.stream_version("s") == 1
            assert [e.data["n"] for e in await store.read_stream("s")] == [1]

        with_writer(log, go)

    def test_of_twenty_concurrent_appenders_to_one_stream_exactly_one_wins(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            results = await asyncio.gather(*(store.append("s", 0, [new(who=i)]) for i in range(20)), return_exceptions=True)
            winners = [r for r in results if isinstance(r, list)]
            assert len(winners) == 1 and sum(isinstance(r, ConcurrencyError) for r in results) == 19
            [winner] = await store.read_stream("s")
            assert [winner.position] == winners[0]

        with_writer(log, go)

    # --- idempotent appends (GUARANTEES 2) ---------------------------------------------------

    def test_appending_the_same_events_again_records_them_once_and_gives_their_positions(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            events = [new(n=1), new(n=2)]
            first = await store.append("s", 0, events)
            await store.append("other", 0, [new()])
            again = await store.append("s", 0, events)  # the acknowledgement was lost; the writer retries
            assert again == first
            assert len(await store.read_stream("s")) == 2 and await store.head_position() == 3

        with_writer(log, go)

    def test_an_append_repeating_some_of_its_ids_or_one_id_twice_is_refused(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            landed = new(n=1)
            await store.append("s", 0, [landed])
            with pytest.raises(EventStoreError, match="some, not all"):
                await store.append("s", 1, [landed, new(n=2)])
            twice = new(n=3)
            with pytest.raises(EventStoreError, match="same event id twice"):
                await store.append("s", 1, [twice, twice])
            assert await store.head_position() == 1

        with_writer(log, go)

    def test_the_events_an_append_gives_back_are_those_a_read_gives_even_for_a_retry(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            await store.append("other", 0, [new(n=0)])
            events = [new("Started", step="store", nested={"b": [1, 2.5], "a": None, "é": "ü"}), new("Done", n=2)]
            given = await store.append_read_back("s", 0, events)
            assert given == await store.read_stream("s")
            assert [e.hash for e in given] == [e.hash for e in await store.read_stream("s")]
            assert await store.append_read_back("s", 0, events) == given
            both = await store.append_atomic_read_back([StreamAppend("s", 2, (new(n=3),)), StreamAppend("t", 0, (new(n=4),))])
            assert both == (await store.read_stream("s", 3)) + (await store.read_stream("t"))

        with_writer(log, go)

    def test_data_that_is_not_json_is_refused_and_nothing_of_its_append_is_written(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            with pytest.raises(EventStoreError):
                await store.append("s", 0, [new(n=1), NewEvent(uuid.uuid4().hex, "Bad", {"x": {1, 2}})])
            assert await store.head_position() == 0 and await store.read_stream("s") == []
            assert await store.append("s", 0, [new(n=1)]) == [1]  # the log goes on

        with_writer(log, go)

    # --- atomic multi-stream appends ---------------------------------------------------------

    def test_an_atomic_append_to_two_streams_writes_both_or_neither(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            await store.append("b", 0, [new()])
            with pytest.raises(ConcurrencyError) as refused:
                await store.append_atomic([StreamAppend("a", 0, (new(),)), StreamAppend("b", 0, (new(),))])
            assert refused.value.stream == "b"
            assert await store.stream_version("a") == 0 and await store.head_position() == 1
            positions = await store.append_atomic([StreamAppend("a", 0, (new(), new())), StreamAppend("b", 1, (new(),))])
            assert positions == [2, 3, 4]
            assert (await store.stream_version("a"), await store.stream_version("b")) == (2, 2)

        with_writer(log, go)

    # --- global order and reads (GUARANTEES 4) -----------------------------------------------

    def test_an_empty_log_has_head_zero_and_every_stream_is_at_version_zero(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            assert await store.head_position() == 0 and await store.stream_version("run-x") == 0
            assert await store.read_all() == [] and await store.read_stream("run-x") == []
            assert await store.streams("") == [] and [e async for e in store.iter_all()] == []

        with_writer(log, go)

    def test_positions_are_global_gap_free_and_only_grow_across_streams(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            got: list[int] = []
            for i in range(30):
                got += await store.append(f"s{i % 4}", 2 * (i // 4), [new(), new()])
            assert got == list(range(1, 61))
            assert [e.position for e in await store.read_all(0, 100)] == got
            assert await store.head_position() == 60

        with_writer(log, go)

    def test_a_stream_reads_back_in_version_order_from_any_version(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            await fill(store, 12)
            s1 = await store.read_stream("s1")
            assert [(e.version, e.data["n"]) for e in s1] == [(1, 1), (2, 4), (3, 7), (4, 10)]
            assert [e.version for e in await store.read_stream("s1", 3)] == [3, 4]
            assert await store.read_stream("s1", 5) == []
            assert all(e.stream == "s1" and e.type == "Thing" and e.schema == 1 and e.recorded_at for e in s1)

        with_writer(log, go)

    def test_pages_and_iteration_give_the_whole_log_in_order_and_filter_by_prefix(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            await fill(store, 20)
            assert [e.position for e in await store.read_all(5, 4)] == [6, 7, 8, 9]
            assert [e.position async for e in store.iter_all(page=3)] == list(range(1, 21))
            assert [e.position async for e in store.iter_all(10, page=4)] == list(range(11, 21))
            assert [e.data["n"] async for e in store.iter_all(stream_prefix="s2", page=2)] == list(range(2, 20, 3))
            assert [e.position for e in await store.read_all(0, 2, "s1")] == [2, 5]

        with_writer(log, go)

    def test_a_stream_prefix_is_matched_literally_not_as_a_pattern(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            for stream in ("run_1", "runX1", "run%2", "run-3", "Run_4"):
                await store.append(stream, 0, [new()])
            assert await store.streams("run_") == ["run_1"]
            assert await store.streams("run%") == ["run%2"]
            assert [e.stream for e in await store.read_all(0, 10, "run_")] == ["run_1"]
            assert [e.stream async for e in store.iter_all(stream_prefix="run%")] == ["run%2"]

        with_writer(log, go)

    def test_streams_are_listed_by_prefix_in_the_order_of_their_first_events(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> None:
            await store.append("run-b", 0, [new()])
            await store.append("job-x", 0, [new()])
            await store.append("run-a", 0, [new()])
            await store.append("run-b", 1, [new()])
            assert await store.streams("run-") == ["run-b", "run-a"]
            assert await store.streams("") == ["run-b", "job-x", "run-a"]

        with_writer(log, go)

    # --- tailing readers (GUARANTEES 4) ------------------------------------------------------

    def test_a_tail_from_a_position_gives_what_follows_it_then_new_events_by_prefix(self, log: LogUnderTest) -> None:
        async def go() -> None:
            async with log.writer() as store, log.reader() as reader:
                await fill(store, 6)
                seen: list[StoredEvent] = []

                async def tail() -> None:
                    async for event in reader.tail(2, "s0", poll_seconds=0.01):
                        seen.append(event)
                        if len(seen) == 2:
                            return

                tailer = asyncio.create_task(tail())
                await store.append("s1", 2, [new(n=6)])  # not under the prefix
                await store.append("s0", 2, [new(n=7)])
                await asyncio.wait_for(tailer, 30)
                assert [(e.position, e.stream, e.data["n"]) for e in seen] == [(4, "s0", 3), (8, "s0", 7)]

        run(go())

    def test_a_tailing_reader_sees_every_event_once_in_order_while_eight_writers_append(self, log: LogUnderTest) -> None:
        """Single and two-stream appends from eight concurrent writers; the reader is another
        handle on the log and starts before, while and after them."""
        writers, rounds = 8, 40
        total = writers * rounds + (writers // 2) * rounds  # even writers also append to a shared stream each round

        async def go() -> None:
            async with log.writer() as store, log.reader() as reader:

                async def tail(after: int) -> list[int]:
                    seen: list[int] = []
                    async for event in reader.tail(after, poll_seconds=0.01):
                        seen.append(event.position)
                        if event.position == total:
                            return seen
                    raise AssertionError("a tail ended")

                async def write(k: int) -> None:
                    for i in range(rounds):
                        if k % 2:
                            await store.append(f"w{k}", i, [new(k=k, i=i)])
                            continue
                        part = StreamAppend(f"w{k}", i, (new(k=k, i=i),))
                        while True:  # the shared stream is contested: retry at its new version
                            shared = StreamAppend("shared", await store.stream_version("shared"), (new(k=k, i=i),))
                            try:
                                await store.append_atomic([part, shared])
                                break
                            except ConcurrencyError:
                                continue

                early = asyncio.create_task(tail(0))
                writing = asyncio.gather(*(write(k) for k in range(writers)))
                while (after := await store.head_position()) < total // 3:  # well into the writing
                    await asyncio.sleep(0)
                middle = asyncio.create_task(tail(after))
                await writing
                late = await asyncio.wait_for(tail(0), 30)
                assert await asyncio.wait_for(early, 30) == list(range(1, total + 1))
                assert await asyncio.wait_for(middle, 30) == list(range(after + 1, total + 1))
                assert late == list(range(1, total + 1))
                assert await store.stream_version("shared") == (writers // 2) * rounds

        run(go())

    # --- the hash chain (GUARANTEES 6) -------------------------------------------------------

    def test_each_event_links_to_the_one_before_by_its_hash(self, log: LogUnderTest) -> None:
        async def go(store: EventLog) -> list[StoredEvent]:
            await fill(store, 10)
            await store.append_atomic([StreamAppend("a", 0, (new(x="é"),)), StreamAppend("b", 0, (new(y=[1, {"z": None}]),))])
            return await store.read_all(0, 100)

        prev = GENESIS_HASH
        for e in with_writer(log, go):
            data = canonical_json(e.data)
            assert e.hash == event_hash(prev, e.position, e.event_id, e.stream, e.version, e.type, e.schema, data, e.recorded_at)
            prev = e.hash
        report = run(log.verify())
        assert report.ok and report.checked == 12

    @pytest.mark.parametrize(
        ("how", "position", "reason"),
        [
            ("edit", 6, "content does not match its hash"),
            ("delete", 4, "event missing"),
            ("delete-newest", 9, "newest events missing"),
        ],
        ids=["an-edited-event", "a-deleted-event", "the-newest-events-deleted"],
    )
    def test_the_chain_check_names_the_first_position_changed_behind_the_stores_back(
        self, log: LogUnderTest, how: Tampering, position: int, reason: str
    ) -> None:
        with_writer(log, lambda store: fill(store, 10))
        log.tamper(how, position)
        report = run(log.verify())
        assert not report.ok and report.first_bad_position == position
        assert reason in (report.reason or "")


# --- the keyed chain (the log key: davit/eventstore/chain.py, keying.py) ------------------------

KeyedTampering = Literal["edit", "delete-newest", "rewind", "forge"]
Row = tuple[int, str, str, int, str, int, str, str, str]
ROW_COLUMNS = "position, event_id, stream, version, type, schema, data, recorded_at, hash"  # a `Row`, as SQL selects it


class KeyedLogUnderTest(Protocol):
    """A log whose store takes the log key: `writer(key)` opens it as davitd does with that key
    (sealing it under the key if it is not keyed yet), `verify(key, key_path)` runs its chain
    check with it. `tamper` adds what a forger who can write the log but not read the key does:
    `rewind` removes the events from `position` on and sets the head back to the one before
    (its seal untouched); `forge` edits the data at `position` and recomputes every hash from
    there on, and the head, with the public algorithm."""

    def writer(self, key: LogKey | None = None) -> AbstractAsyncContextManager[EventLog]: ...

    def tamper(self, how: KeyedTampering, position: int) -> None: ...

    async def verify(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport: ...


def forged(rows: list[Row], position: int) -> tuple[list[tuple[str, str, str, int]], tuple[int, str]]:
    """The forger's rewrite (`forge`): for every row from `position` on, its (data, prev_hash,
    hash, position) recomputed publicly after the data at `position` became {"n":999}; and the
    new head. The rows before `position` keep their stored hashes."""
    out: list[tuple[str, str, str, int]] = []
    prev = GENESIS_HASH
    for pos, event_id, stream, version, type_, schema, data, recorded_at, stored in rows:
        if pos < position:
            prev = stored
            continue
        if pos == position:
            data = '{"n":999}'
        digest = event_hash(prev, pos, event_id, stream, version, type_, schema, data, recorded_at)
        out.append((data, prev, digest, pos))
        prev = digest
    return out, (rows[-1][0], prev)


def a_key(name: str = "log.key") -> LogKey:
    """A key that pins no head (as one given as 64 hex digits); the path is only named."""
    return LogKey(Path(f"/keys/{name}"), secrets.token_bytes(32))


def with_keyed_writer(log: KeyedLogUnderTest, key: LogKey | None, fn: Callable[[EventLog], Awaitable[T]]) -> T:
    async def go() -> T:
        async with log.writer(key) as store:
            return await fn(store)

    return run(go())


class KeyedEventLogContract:
    """What a store that takes the log key promises (README "Tamper evidence"), as SQLite first did."""

    def test_keying_a_plain_log_seals_it_with_a_keyed_marker_and_links_on_with_the_key(
        self, keyed_log: KeyedLogUnderTest
    ) -> None:
        key = a_key()
        with_keyed_writer(keyed_log, None, lambda store: fill(store, 3))
        plain_head = run(keyed_log.verify())
        assert plain_head.ok and plain_head.keyed_from is None

        async def go(store: EventLog) -> list[StoredEvent]:
            await store.append("s0", 1, [new(n=3)])
            return await store.read_all(0, 100)

        events = with_keyed_writer(keyed_log, key, go)
        marker = events[3]
        assert (marker.position, marker.stream, marker.type) == (4, MARKER_STREAM, MARKER_TYPE)
        assert marker.data == {"key_id": key_id(key.secret), "plain_events": 3, "plain_head": events[2].hash}
        prev = GENESIS_HASH
        for e in events:  # plain links up to the marker, keyed from it on
            secret = key.secret if e.position >= 4 else None
            data = canonical_json(e.data)
            fields = (e.position, e.event_id, e.stream, e.version, e.type, e.schema, data, e.recorded_at)
            assert e.hash == event_hash(prev, *fields, key=secret)
            prev = e.hash
        report = run(keyed_log.verify(key))
        assert report.ok and report.checked == 5 and report.keyed_from == 4

    def test_a_keyed_log_is_verified_only_with_its_key_and_without_one_the_key_path_is_named(
        self, keyed_log: KeyedLogUnderTest
    ) -> None:
        key = a_key("right.key")
        with_keyed_writer(keyed_log, key, lambda store: fill(store, 4))
        assert run(keyed_log.verify(key)).ok
        with pytest.raises(LogKeyError, match=r"keyed .*no log key at /keys/missing\.key"):
            run(keyed_log.verify(None, Path("/keys/missing.key")))
        wrong = run(keyed_log.verify(a_key("wrong.key")))
        assert not wrong.ok and wrong.first_bad_position == 1 and "another key than /keys/wrong.key" in (wrong.reason or "")

    def test_a_writer_with_another_key_or_none_appends_nothing_to_a_keyed_log(self, keyed_log: KeyedLogUnderTest) -> None:
        key = a_key()
        with_keyed_writer(keyed_log, key, lambda store: fill(store, 2))
        with pytest.raises(LogKeyError, match="another key"):
            with_keyed_writer(keyed_log, a_key("other.key"), lambda store: store.append("s", 0, [new()]))
        with pytest.raises(LogKeyError, match="keyed"):
            with_keyed_writer(keyed_log, None, lambda store: store.append("s", 0, [new()]))
        report = run(keyed_log.verify(key))
        assert report.ok and report.checked == 3  # the marker and two events: nothing else landed

    def test_a_key_made_for_another_head_does_not_seal_this_log(self, keyed_log: KeyedLogUnderTest) -> None:
        with_keyed_writer(keyed_log, None, lambda store: fill(store, 2))
        made_elsewhere = LogKey(Path("/keys/log.key"), secrets.token_bytes(32), sealed=(7, "f" * 64))
        with pytest.raises(LogKeyError, match=r"not the log the key /keys/log\.key was made for"):
            with_keyed_writer(keyed_log, made_elsewhere, lambda store: store.append("s", 0, [new()]))
        assert run(keyed_log.verify()).ok  # still plain, untouched

    def test_several_writers_sharing_one_key_seal_once_and_all_link_with_it(self, keyed_log: KeyedLogUnderTest) -> None:
        """Several davitd on one log, each with its copy of the key: the first to open seals, the
        others find the log keyed with their key; their appends interleave on one keyed chain."""
        key = a_key()
        with_keyed_writer(keyed_log, None, lambda store: fill(store, 2))
        copy = LogKey(Path("/keys/copy.key"), key.secret)

        async def go() -> list[StoredEvent]:
            async with keyed_log.writer(key) as a, keyed_log.writer(copy) as b:
                for i in range(5):
                    await a.append("a", i, [new(i=i)])
                    await b.append("b", i, [new(i=i)])
                await asyncio.gather(*(w.append(f"c{k}", 0, [new()]) for k, w in enumerate((a, b, a, b))))
                return await a.read_all(0, 100)

        events = run(go())
        assert [e.type for e in events].count(MARKER_TYPE) == 1 and len(events) == 2 + 1 + 10 + 4
        report = run(keyed_log.verify(copy))
        assert report.ok and report.keyed_from == 3 and report.checked == len(events)

    @pytest.mark.parametrize(
        ("how", "position", "reason"),
        [
            ("edit", 5, "content does not match its hash"),
            ("forge", 5, "content does not match its hash"),
            ("forge", 2, "content does not match its hash"),
            ("rewind", 7, "chain head not sealed by the key"),
            ("delete-newest", 7, "newest events missing"),
        ],
        ids=["an-edited-event", "a-forged-keyed-event", "a-forged-plain-event", "the-head-rewound", "the-newest-deleted"],
    )
    def test_what_a_forger_without_the_key_does_is_found_at_its_first_position(
        self, keyed_log: KeyedLogUnderTest, how: KeyedTampering, position: int, reason: str
    ) -> None:
        key = a_key()
        with_keyed_writer(keyed_log, None, lambda store: fill(store, 2))
        with_keyed_writer(keyed_log, key, lambda store: fill(store, 6, streams=6, prefix="k"))  # marker at 3, keyed 4..9
        keyed_log.tamper(how, position)
        report = run(keyed_log.verify(key))
        # (a forged plain event is found where the keyed marker no longer matches the plain head it covers)
        first = 3 if (how, position) == ("forge", 2) else position
        assert not report.ok and report.first_bad_position == first and reason in (report.reason or ""), report

"""Reading ahead (`davit/adapters/prefetch.py`): order kept, read-ahead bounded, errors where they belong,
and the reading stops when the consumer does. Real threads and pools; the sources count what
was drawn from them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from davit.adapters.prefetch import READ_BATCH, calls_ahead, chunks_ahead, in_background
from davit.domain.errors import CorruptChunk


class Counted:
    """An endless (or `limit`-long) source of 0, 1, 2, ... that counts what was drawn."""

    def __init__(self, limit: int | None = None, fail_at: int | None = None) -> None:
        self.drawn = 0
        self.limit, self.fail_at = limit, fail_at

    def __iter__(self) -> Iterator[int]:
        while self.limit is None or self.drawn < self.limit:
            if self.drawn == self.fail_at:
                raise CorruptChunk(f"#{self.drawn}", "coll", "does not match its id")
            self.drawn += 1
            yield self.drawn - 1


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


# --- in_background -------------------------------------------------------------------------------


def test_a_background_reader_hands_out_every_item_in_the_order_of_its_source() -> None:
    assert list(in_background(iter(Counted(limit=1000)), 3, "t-order")) == list(range(1000))


def test_a_background_reader_stays_at_most_depth_items_ahead_of_a_slow_consumer() -> None:
    source = Counted(limit=30)
    items = in_background(iter(source), 4, "t-bounded")
    for consumed, _item in enumerate(items, start=1):
        # the thread reads ahead until the queue is full and holds one more in hand, no further
        wait_for(lambda c=consumed: source.drawn >= min(30, c + 5))
        time.sleep(0.02)
        assert source.drawn == min(30, consumed + 5)


def test_an_error_of_the_background_source_surfaces_after_the_items_before_it() -> None:
    got: list[int] = []
    with pytest.raises(CorruptChunk, match="#3"):
        for item in in_background(iter(Counted(fail_at=3)), 2, "t-error"):
            got.append(item)
    assert got == [0, 1, 2]


def test_leaving_the_loop_stops_the_background_thread_and_its_reading() -> None:
    source = Counted()  # endless: only stopping the thread ends it
    items = in_background(iter(source), 2, "t-cancel")
    for item in items:
        if item == 2:
            break
    assert_stopped(items, "t-cancel", source, 3 + 2 + 1)


def assert_stopped(items: Iterator[int], name: str, source: Counted, most: int) -> None:
    """Closing `items` ends its thread, which draws nothing more and has drawn at most `most`."""
    items.close()  # type: ignore[attr-defined]
    assert name not in [t.name for t in threading.enumerate()]
    drawn = source.drawn
    time.sleep(0.3)
    assert source.drawn == drawn <= most


def test_a_batched_background_reader_keeps_the_order_and_the_items_before_an_error() -> None:
    assert list(in_background(iter(Counted(limit=1000)), 20, "t-batch-order", batch=7)) == list(range(1000))
    got: list[int] = []
    with pytest.raises(CorruptChunk, match="#10"):
        for item in in_background(iter(Counted(fail_at=10)), 8, "t-batch-error", batch=4):
            got.append(item)
    assert got == list(range(10))  # the partial group drawn before the error comes first


def test_a_batched_background_reader_hands_over_a_partial_batch_when_the_consumer_waits() -> None:
    released = threading.Event()

    def source() -> Iterator[int]:
        yield 0
        released.wait(10)  # the walk of a slow directory: no more items for now
        yield 1

    items = in_background(source(), 256, "t-batch-partial", batch=64)
    started = time.monotonic()
    assert next(items) == 0  # not held back until 64 items are drawn
    assert time.monotonic() - started < 5
    released.set()
    assert list(items) == [1]


def test_a_batched_background_reader_stays_bounded_and_stops_when_left() -> None:
    source = Counted()  # endless
    depth, batch = 8, 4
    items = in_background(iter(source), depth, "t-batch-bounded", batch=batch)
    for consumed, _item in enumerate(items, start=1):
        time.sleep(0.005)
        # the queue's groups, the group in the producer's hand and the rest of the consumer's
        assert source.drawn <= consumed + depth + 2 * batch
        if consumed == 40:
            break
    assert_stopped(items, "t-batch-bounded", source, 40 + depth + 2 * batch + 1)  # and one drawn as it stops


# --- calls_ahead ---------------------------------------------------------------------------------


class Started:
    """Counts the calls started, from any thread."""

    def __init__(self) -> None:
        self.started = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self.started += 1


class Calls(Started):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at

    def __call__(self, n: int) -> int:
        self.start()
        time.sleep(0.001 * (n % 3))  # finish out of order
        if n == self.fail_at:
            raise CorruptChunk(f"#{n}", "coll", "does not match its id")
        return n * n


def test_calls_ahead_come_back_in_the_order_of_their_arguments() -> None:
    with ThreadPoolExecutor(4) as pool:
        assert list(calls_ahead(pool, Calls(), range(200), depth=3)) == [n * n for n in range(200)]


def test_calls_ahead_are_at_most_depth_calls_ahead_of_the_consumer() -> None:
    calls = Calls()
    with ThreadPoolExecutor(8) as pool:
        for consumed, _result in enumerate(calls_ahead(pool, calls, range(50), depth=3), start=1):
            wait_for(lambda c=consumed: calls.started >= min(50, c + 3))
            time.sleep(0.01)
            assert calls.started == min(50, consumed + 3)


def test_a_failed_call_surfaces_where_its_result_would_have_come() -> None:
    got: list[int] = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(CorruptChunk, match="#4"):
        for result in calls_ahead(pool, Calls(fail_at=4), range(10), depth=2):
            got.append(result)
    assert got == [0, 1, 4, 9]


def test_closing_calls_ahead_makes_no_further_call() -> None:
    calls = Calls()
    with ThreadPoolExecutor(2) as pool:
        results = calls_ahead(pool, calls, range(10_000), depth=2)
        assert [next(results) for _ in range(3)] == [0, 1, 4]
        results.close()
    assert calls.started <= 3 + 2


# --- chunks_ahead --------------------------------------------------------------------------------


@dataclass
class Entry:
    path: str
    chunks: list[str] = field(default_factory=list)


class Chunks(Started):
    """A store of chunks by id; `read` counts its reads and fails on the ids in `bad`."""

    def __init__(self, bad: frozenset[bytes] = frozenset()) -> None:
        super().__init__()
        self.bad = bad

    def read(self, chunk_id: bytes) -> bytes:
        self.start()
        if chunk_id in self.bad:
            raise CorruptChunk(chunk_id.hex(), "(store)", "does not match its id")
        return b"data of " + chunk_id


def entries(count: int, chunks_each: int) -> list[Entry]:
    return [Entry(f"f{i}", [f"{i:04x}{j:04x}" for j in range(chunks_each)]) for i in range(count)]


def test_chunks_ahead_hand_out_each_entry_with_its_chunks_in_order() -> None:
    todo = [*entries(50, 3), Entry("dir"), *entries(5, 1)]
    with ThreadPoolExecutor(4) as pool:
        got = [(e.path, list(chunks)) for e, chunks in chunks_ahead(todo, Chunks().read, pool, 5)]
    assert got == [(e.path, [b"data of " + bytes.fromhex(c) for c in e.chunks]) for e in todo]


def test_chunks_ahead_read_at_most_depth_chunks_ahead_of_the_writer_across_entries() -> None:
    store = Chunks()
    consumed = 0
    gaps = []
    with ThreadPoolExecutor(8) as pool:
        for _entry, chunks in chunks_ahead(entries(30, 2), store.read, pool, 4):
            for _data in chunks:
                consumed += 1
                time.sleep(0.01)  # a slow writer: the pool has run whatever was submitted
                gaps.append(store.started - consumed)
    assert consumed == 60
    assert 2 <= max(gaps) <= 4  # it reads ahead (into the next entries), never further than the bound


def test_a_chunk_that_fails_its_read_stops_the_writer_at_that_chunk() -> None:
    todo = entries(3, 2)
    bad = bytes.fromhex(todo[1].chunks[1])
    written: list[tuple[str, bytes]] = []
    with ThreadPoolExecutor(4) as pool, pytest.raises(CorruptChunk, match=bad.hex()):
        for entry, chunks in chunks_ahead(todo, Chunks(frozenset({bad})).read, pool, 8):
            for data in chunks:
                written.append((entry.path, data))
    assert [path for path, _ in written] == ["f0", "f0", "f1"]


def test_stopping_a_restore_stops_reading_its_chunks() -> None:
    store = Chunks()
    with ThreadPoolExecutor(4) as pool:
        items = chunks_ahead(entries(10_000, 1), store.read, pool, 3)
        entry, chunks = next(items)
        assert list(chunks) == [b"data of " + bytes.fromhex(entry.chunks[0])]
        items.close()
    assert store.started <= 1 + 3


def test_an_entry_whose_chunks_the_writer_leaves_does_not_end_the_entries_after_it() -> None:
    """A writer that passes over an entry without taking all its chunks (today's writers take them
    all, even for a hard link, or fail the run; a new writer skipping an entry with a warning need
    not): those chunks stayed counted as in flight, and with `depth` of them left no further entry
    was taken: the entries ended early, silently, a truncated restore."""
    todo = [Entry("big", [f"{j:08x}" for j in range(6)]), *entries(20, 1)]
    with ThreadPoolExecutor(4) as pool:
        got = [entry.path for entry, _chunks in chunks_ahead(todo, Chunks().read, pool, 4)]
    assert got == [e.path for e in todo]


def test_small_files_read_together_each_get_their_own_chunk_and_a_bad_one_fails_only_its_file() -> None:
    """One-chunk entries are read several per task: each still gets its own chunk, in order;
    a chunk that fails its check is raised for its own entry, the ones before it in the same
    read were handed out whole; an entry the writer passes over leaves the next ones intact."""
    todo = [*entries(20, 1), Entry("dir"), Entry("big", ["aaaa0000", "aaaa0001"]), *entries(5, 1)]
    bad = bytes.fromhex(todo[13].chunks[0])
    store = Chunks(frozenset({bad}))
    got: list[tuple[str, list[bytes]]] = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(CorruptChunk, match=bad.hex()):
        for entry, chunks in chunks_ahead(todo, store.read, pool, 16):
            if entry.path == "f3":
                continue  # passed over: its chunk is dropped, not the batch it was read with
            got.append((entry.path, list(chunks)))
    assert [path for path, _ in got] == [f"f{i}" for i in range(13) if i != 3]
    assert all(data == [b"data of " + bytes.fromhex(todo[int(p[1:])].chunks[0])] for p, data in got)


class CountingPool(ThreadPoolExecutor):
    """A pool that counts the tasks submitted to it."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.tasks = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.tasks += 1
        return super().submit(fn, *args, **kwargs)


def test_small_files_are_read_a_whole_batch_per_task_all_through_the_restore() -> None:
    """Not only the first `depth` of them: once reads are under way, the next batch waits for
    room for a whole batch rather than going out one entry at a time."""
    todo = entries(400, 1)
    with CountingPool(2) as pool:
        got = [(e.path, list(chunks)) for e, chunks in chunks_ahead(todo, Chunks().read, pool, 16)]
    assert got == [(e.path, [b"data of " + bytes.fromhex(e.chunks[0])]) for e in todo]
    assert pool.tasks <= 400 // READ_BATCH + 2

"""Reading ahead, so waiting for a server or a disk overlaps with the work on what came before.

One module for the adapters' three ways of doing it, each bounded (memory stays the same
whatever the size of the source), each keeping the source's order, each raising a failure
of the reading where the consumer reaches it (a chunk that fails its check stops the run
before a byte of it is used), and each stopping its reading when the consumer stops:

- `in_background`: an iterator drawn by a thread of its own, a few items ahead (the pages of
  a Weaviate collection, the batches of a MongoDB cursor, the chunks prepared for a write);
- `calls_ahead`: one call per argument on a pool, a few calls ahead (a collection's chunks);
- `chunks_ahead`: tree entries with their chunks, read on a pool up to a number of chunks
  ahead across entries (a files or volume restore: many small files in flight at once);
- `spans_ahead`: the same for a remote repository, where a request costs a round trip: the
  chunks ahead (up to a number of bytes) are grouped by pack, and the nearby ones of a pack
  fetched in one ranged read, several reads in flight at once.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar

from davit.adapters.repository.packs import BlobRef
from davit.adapters.repository.tuning import Tuning

T = TypeVar("T")
A = TypeVar("A")

_POLL = 0.2  # how often a blocked producer looks whether the consumer has stopped


def in_background(items: Iterator[T], depth: int, name: str, batch: int = 1) -> Generator[T, None, None]:
    """`items` drawn by a thread named `name`, at most `depth` ahead of the consumer. An error
    of `items` is raised to the consumer after the items before it. Closing the generator (or
    leaving a loop over it) stops the thread before it draws more than `batch` further items.

    `batch`: items handed over together, up to that many (a partial batch goes at once when the
    consumer has nothing left to take). Each hand-off is a queue put and get, a lock and a
    wake-up each holding the GIL: for many small items (a walk's entries: 11k for issue 18's
    bench tree) they cost more than the items themselves (a walk in a thread of its own took
    0.17-0.24 s of CPU with one item per hand-off, against 0.10 s walking alone)."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(max(1, depth // max(batch, 1)))
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(items, box, stop, batch), name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield from value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full box
            try:
                box.get(timeout=_POLL)
            except queue.Empty:
                continue
        thread.join()


def _produce(items: Iterator[T], box: queue.Queue[tuple[str, Any]], stop: threading.Event, batch: int) -> None:
    """`in_background`'s thread: `items` into `box` in groups of up to `batch` (one sooner when
    `box` is empty: the consumer waits for it), then the end or the error that ended them."""
    group: list[T] = []
    try:
        for item in items:
            group.append(item)
            if len(group) >= batch or box.empty():
                if not _hand_over(box, stop, group):
                    return
                group = []
        if group and not _hand_over(box, stop, group):
            return
        box.put(("end", None))
    except BaseException as exc:  # handed to the consumer, in order (after what was drawn before it)
        if group:
            box.put(("items", group))
        box.put(("error", exc))


def _hand_over(box: queue.Queue[tuple[str, Any]], stop: threading.Event, group: list[T]) -> bool:
    """Put `group` into `box` once it has room; False if the consumer stopped first."""
    while not stop.is_set():
        try:
            box.put(("items", group), timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def calls_ahead(pool: Executor, fn: Callable[[A], T], args: Iterable[A], depth: int) -> Iterator[T]:
    """`fn(arg)` for each of `args` in order, run on `pool` with `depth` calls submitted ahead of
    the one the consumer holds. A call's error is raised where its result would have come."""
    source = iter(args)
    pending: deque[Future[T]] = deque(pool.submit(fn, arg) for arg in islice(source, depth))
    try:
        while pending:
            result = pending.popleft().result()
            for arg in islice(source, 1):
                pending.append(pool.submit(fn, arg))
            yield result
    finally:
        for future in pending:
            future.cancel()


class HasChunks(Protocol):
    """A tree entry: the hex ids of its chunks, in order."""

    chunks: list[str]


E = TypeVar("E", bound=HasChunks)


READ_BATCH = 8  # chunks of consecutive one-chunk entries read by one task (a hand-off per small file costs as much as its read)


class _Part:
    """One chunk's result within a batch read by one task (`_read_all`): a future's view."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Future[list[bytes | Exception]], index: int) -> None:
        self._batch, self._index = batch, index

    def result(self) -> bytes:
        got = self._batch.result()[self._index]
        if isinstance(got, Exception):
            raise got
        return got

    def cancel(self) -> bool:
        # Never cancels the batch: it holds the chunks of the entries after this one too (the
        # read goes on, within the `depth` bound, and its result is dropped).
        return False


def _read_all(read: Callable[[bytes], bytes], chunk_ids: list[bytes]) -> list[bytes | Exception]:
    """Each chunk read (and verified) by `read`, or the error its read raised, in order: a
    chunk that fails fails only the entry it belongs to, where the writer reaches it."""
    out: list[bytes | Exception] = []
    for chunk_id in chunk_ids:
        try:
            out.append(read(chunk_id))
        except Exception as exc:  # handed to the writer in the chunk's place
            out.append(exc)
    return out


Pending = deque["Future[bytes] | _Part"]


def chunks_ahead(
    entries: Iterable[E], read: Callable[[bytes], bytes], pool: Executor, depth: int
) -> Generator[tuple[E, Iterator[bytes]], None, None]:
    """Entries with their chunks, read (and so verified, `read` being the repository's
    `read_chunk`) on `pool` up to `depth` chunks ahead of the writer: the chunks of the entry
    being written first, then those of the entries after it. Chunks of an entry the writer has
    not taken when it asks for the next entry are dropped. The chunks of consecutive one-chunk
    entries (small files) are read up to `READ_BATCH` per task."""
    plan = _ChunkPlan(entries, read, pool, depth)
    plan.fill()
    while plan.queued:
        entry, futures, todo = plan.queued.popleft()
        yield entry, plan.chunks_of(futures, todo)
        # the writer moved on: chunks of this entry it did not take are no longer in flight (left
        # counted, they would keep `fill` from taking the next entry and end the entries early)
        plan.inflight -= len(futures)
        for future in futures:
            future.cancel()
        futures.clear()
        todo.clear()
        plan.fill()


class _ChunkPlan(Generic[E]):
    """The entries queued ahead of the writer, each with its chunk reads under way and the ids
    of its chunks not submitted yet; `inflight` chunks submitted and not taken, at most `depth`."""

    def __init__(self, entries: Iterable[E], read: Callable[[bytes], bytes], pool: Executor, depth: int) -> None:
        self.source, self.read, self.pool, self.depth = iter(entries), read, pool, depth
        self.queued: deque[tuple[E, Pending, list[str]]] = deque()
        self.inflight = 0
        self.exhausted = False
        self.held: E | None = None  # taken from the source, not queued yet

    def fill(self) -> None:
        batch: list[tuple[Pending, bytes]] = []
        while not self.exhausted and self.inflight + len(batch) < self.depth:
            # top up the newest queued entry's chunks before taking a new entry
            if self.queued and self.queued[-1][2]:
                self.submit_next(*self.queued[-1][1:])
                continue
            entry = self.held if self.held is not None else next(self.source, None)
            self.held = None
            if entry is None:
                self.exhausted = True
            elif len(entry.chunks) == 1:
                if not batch and self.queued and self.depth - self.inflight < min(READ_BATCH, self.depth):
                    # reads are under way: wait for room for a whole batch, or the small files
                    # after the first `depth` would go one per task again
                    self.held = entry
                    break
                self.queued.append((entry, deque(), []))
                batch.append((self.queued[-1][1], bytes.fromhex(entry.chunks[0])))
                if len(batch) >= READ_BATCH:
                    self.send(batch)
            else:
                self.send(batch)  # submitted in the writer's order
                self.queued.append((entry, deque(), list(entry.chunks)))
        self.send(batch)

    def send(self, batch: list[tuple[Pending, bytes]]) -> None:
        """One task reading the chunks of `batch` (one-chunk entries), each entry its part."""
        if batch:
            read_batch = self.pool.submit(_read_all, self.read, [cid for _futures, cid in batch])
            for index, (futures, _cid) in enumerate(batch):
                futures.append(_Part(read_batch, index))
            self.inflight += len(batch)
            batch.clear()

    def submit_next(self, futures: Pending, todo: list[str]) -> None:
        futures.append(self.pool.submit(self.read, bytes.fromhex(todo.pop(0))))
        self.inflight += 1

    def chunks_of(self, futures: Pending, todo: list[str]) -> Iterator[bytes]:
        while futures or todo:
            if not futures:
                self.submit_next(futures, todo)
            data = futures.popleft().result()
            self.inflight -= 1
            while todo and self.inflight < self.depth:
                self.submit_next(futures, todo)
            yield data


# --- spans_ahead ---------------------------------------------------------------------------------

SPAN_GAP = 256 << 10  # unwanted bytes between two wanted chunks of a pack still read through: cheaper than a request
SPAN_MAX = 8 << 20  # bytes one ranged read spans at most, so several reads run at once
BATCH_SLOTS = 4096  # entries and chunks planned at once at most (empty files weigh no bytes)


class SpanReader(Protocol):
    """The repository as `spans_ahead` reads it."""

    def blob_ref(self, chunk_id: bytes) -> BlobRef | None: ...

    def read_chunk(self, chunk_id: bytes) -> bytes: ...

    def read_span(self, pack: str, members: Sequence[tuple[bytes, BlobRef]]) -> Sequence[bytes | Exception]: ...


Member = tuple[int, bytes, BlobRef]  # (slot in the batch, chunk id, where it is stored)


def pack_spans(members: list[Member]) -> list[list[Member]]:
    """`members` (of one pack) in runs read by one ranged request each: by offset, a run going
    on while the next member starts within `SPAN_GAP` of its end and it stays within `SPAN_MAX`."""
    ordered = sorted(members, key=lambda m: m[2].offset)
    spans: list[list[Member]] = []
    start = end = 0
    for member in ordered:
        ref = member[2]
        stop = ref.offset + ref.stored_len
        if spans and ref.offset - end <= SPAN_GAP and max(end, stop) - start <= SPAN_MAX:
            spans[-1].append(member)
            end = max(end, stop)
        else:
            spans.append([member])
            start, end = ref.offset, stop
    return spans


def spans_ahead(
    entries: Iterable[E], reader: SpanReader, reads: int, max_bytes: int
) -> Generator[tuple[E, Iterator[bytes]], None, None]:
    """What `chunks_ahead` hands out (entries with their verified chunks, in order, the chunks
    an entry's writer did not take dropped), read for a remote repository: the chunks up to
    about `max_bytes` (plain) ahead of the writer are fetched by pack span on a pool of `reads`
    threads, which also verify them (a chunk that fails raises where the writer reaches it).
    Closing the generator cancels the reads not started and waits for those under way."""
    with ThreadPoolExecutor(reads, thread_name_prefix="davit-read") as pool:
        plan = _SpanPlan(entries, reader, pool, max_bytes)
        try:
            yield from plan.entries()
        finally:
            plan.cancel()


class RestoreSource(SpanReader, Protocol):
    @property
    def is_remote(self) -> bool: ...


def restore_reads(
    entries: Iterable[E], repo: RestoreSource, pool: Executor, tuning: Tuning
) -> Generator[tuple[E, Iterator[bytes]], None, None]:
    """The entries of a restore with their chunks: from a local repository one read per chunk
    on `pool` (a read is a cheap pread), from a remote one by pack span (a read is a request)."""
    if repo.is_remote:
        return spans_ahead(entries, repo, tuning.remote_reads, tuning.remote_read_ahead)
    return chunks_ahead(entries, repo.read_chunk, pool, tuning.inflight_chunks)


def _flat(entries: Iterable[E]) -> Iterator[tuple[E, str | None]]:
    """Each entry (None), then each of its chunks (hex id): the order the writer takes them."""
    for entry in entries:
        yield entry, None
        for chunk in entry.chunks:
            yield entry, chunk


Slot = tuple[Any, "Future[Sequence[bytes | Exception]] | None", int, int]  # entry, its read, index in it, bytes


class _SpanPlan(Generic[E]):
    """The slots (entries and chunks) planned ahead of the writer, with their reads under way."""

    def __init__(self, entries: Iterable[E], reader: SpanReader, pool: Executor, max_bytes: int) -> None:
        self.source, self.reader, self.pool = _flat(entries), reader, pool
        self.max_bytes, self.batch_bytes = max_bytes, max(1, max_bytes // 4)
        self.slots: deque[Slot] = deque()
        self.ahead = 0  # plain bytes of the chunk slots planned
        self.exhausted = False
        self.taken = 0  # entries handed out: a chunk iterator of an earlier one stops

    def entries(self) -> Iterator[tuple[E, Iterator[bytes]]]:
        self.fill()
        while self.slots:
            entry: E = self.pop()[0]
            self.taken += 1
            yield entry, self.chunks(self.taken)
            while self.head_is_chunk():  # the writer moved on: drop what it did not take
                self.pop()

    def chunks(self, turn: int) -> Iterator[bytes]:
        while turn == self.taken and self.head_is_chunk():
            _entry, read, index, _size = self.pop()
            if read is None:  # not reached: a chunk slot always has its read
                return
            got = read.result()[index]
            if isinstance(got, Exception):
                raise got
            yield got

    def head_is_chunk(self) -> bool:
        self.fill()
        return bool(self.slots) and self.slots[0][1] is not None

    def pop(self) -> Slot:
        slot = self.slots.popleft()
        self.ahead -= slot[3]
        self.fill()
        return slot

    def fill(self) -> None:
        while not self.exhausted and (not self.slots or self.ahead <= self.max_bytes - self.batch_bytes):
            self.plan()

    def plan(self) -> None:
        """Take the next batch of slots from the source and start the reads of its chunks."""
        batch: list[tuple[E, bytes | None, BlobRef | None]] = []
        size = 0
        while size < self.batch_bytes and len(batch) < BATCH_SLOTS:
            item = next(self.source, None)
            if item is None:
                self.exhausted = True
                break
            entry, chunk = item
            cid = bytes.fromhex(chunk) if chunk is not None else None
            ref = self.reader.blob_ref(cid) if cid is not None else None
            size += ref.plain_len if ref is not None else 0
            batch.append((entry, cid, ref))
        reads = self.start_reads(batch)
        for n, (entry, _cid, ref) in enumerate(batch):
            read, index = reads.get(n, (None, 0))
            self.slots.append((entry, read, index, ref.plain_len if ref is not None else 0))
        self.ahead += size

    def start_reads(
        self, batch: list[tuple[E, bytes | None, BlobRef | None]]
    ) -> dict[int, tuple[Future[Sequence[bytes | Exception]], int]]:
        """The read of each chunk slot of `batch` (by its position), and its index in that read."""
        by_pack: dict[str, list[Member]] = {}
        reads: dict[int, tuple[Future[Sequence[bytes | Exception]], int]] = {}
        for n, (_entry, cid, ref) in enumerate(batch):
            if cid is not None and ref is None:  # not in the index: `read_chunk` says so, in its place
                reads[n] = (self.pool.submit(_read_one, self.reader, cid), 0)
            elif cid is not None and ref is not None:
                by_pack.setdefault(ref.pack, []).append((n, cid, ref))
        spans = [span for members in by_pack.values() for span in pack_spans(members)]
        for span in sorted(spans, key=lambda s: min(m[0] for m in s)):  # the writer's order first
            read = self.pool.submit(self.reader.read_span, span[0][2].pack, [(cid, ref) for _n, cid, ref in span])
            for index, (n, _cid, _ref) in enumerate(span):
                reads[n] = (read, index)
        return reads

    def cancel(self) -> None:
        for _entry, read, _index, _size in self.slots:
            if read is not None:
                read.cancel()
        self.slots.clear()


def _read_one(reader: SpanReader, chunk_id: bytes) -> Sequence[bytes | Exception]:
    return [reader.read_chunk(chunk_id)]

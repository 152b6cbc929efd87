"""Reading ahead, so waiting for a server or a disk overlaps with the work on what came before.

One module for the adapters' three ways of doing it, each bounded (memory stays the same
whatever the size of the source), each keeping the source's order, each raising a failure
of the reading where the consumer reaches it (a chunk that fails its check stops the run
before a byte of it is used), and each stopping its reading when the consumer stops:

- `in_background`: an iterator drawn by a thread of its own, a few items ahead (the pages of
  a Weaviate collection, the batches of a MongoDB cursor, the chunks prepared for a write);
- `calls_ahead`: one call per argument on a pool, a few calls ahead (a collection's chunks);
- `chunks_ahead`: tree entries with their chunks, read on a pool up to a number of chunks
  ahead across entries (a files or volume restore: many small files in flight at once).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future
from itertools import islice
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
A = TypeVar("A")

_POLL = 0.2  # how often a blocked producer looks whether the consumer has stopped


def in_background(items: Iterator[T], depth: int, name: str) -> Generator[T, None, None]:
    """`items` drawn by a thread named `name`, at most `depth` ahead of the consumer. An error
    of `items` is raised to the consumer after the items before it. Closing the generator (or
    leaving a loop over it) stops the thread before it draws more than one further item."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(("item", item), timeout=_POLL)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:  # handed to the consumer, in order
            box.put(("error", exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full box
            try:
                box.get(timeout=_POLL)
            except queue.Empty:
                continue
        thread.join()


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


def chunks_ahead(
    entries: Iterable[E], read: Callable[[bytes], bytes], pool: Executor, depth: int
) -> Iterator[tuple[E, Iterator[bytes]]]:
    """Entries with their chunks, read (and so verified, `read` being the repository's
    `read_chunk`) on `pool` up to `depth` chunks ahead of the writer: the chunks of the entry
    being written first, then those of the entries after it. Chunks of an entry the writer has
    not taken when it asks for the next entry are dropped."""
    queued: deque[tuple[E, deque[Future[bytes]], list[str]]] = deque()
    inflight = 0
    source = iter(entries)
    exhausted = False

    def fill() -> None:
        nonlocal inflight, exhausted
        while not exhausted and inflight < depth:
            # top up the newest queued entry's chunks before taking a new entry
            if queued and queued[-1][2]:
                _entry, futures, todo = queued[-1]
                futures.append(pool.submit(read, bytes.fromhex(todo.pop(0))))
                inflight += 1
                continue
            entry = next(source, None)
            if entry is None:
                exhausted = True
                return
            queued.append((entry, deque(), list(entry.chunks)))

    def chunks_of(futures: deque[Future[bytes]], todo: list[str]) -> Iterator[bytes]:
        nonlocal inflight
        while futures or todo:
            if not futures:
                futures.append(pool.submit(read, bytes.fromhex(todo.pop(0))))
                inflight += 1
            data = futures.popleft().result()
            inflight -= 1
            fill_current(futures, todo)
            yield data

    def fill_current(futures: deque[Future[bytes]], todo: list[str]) -> None:
        nonlocal inflight
        while todo and inflight < depth:
            futures.append(pool.submit(read, bytes.fromhex(todo.pop(0))))
            inflight += 1

    fill()
    while queued:
        entry, futures, todo = queued.popleft()
        yield entry, chunks_of(futures, todo)
        # the writer moved on: chunks of this entry it did not take are no longer in flight (left
        # counted, they would keep `fill` from taking the next entry and end the entries early)
        inflight -= len(futures)
        for future in futures:
            future.cancel()
        futures.clear()
        todo.clear()
        fill()

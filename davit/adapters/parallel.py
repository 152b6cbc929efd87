"""Units of a run in parallel (mongo collections, PostgreSQL tables), with every `RunContext`
call made from the run's own thread.

The executor hands a `JobWork` one worker thread and its `RunContext` records events from
that thread. `run_parallel` runs one task per unit on a bounded pool; a task calls
`relay.call(fn, ...)` to have the run's thread make a context call (checkpoint, warning,
step start/end) and waits for it to be durable, which also paces the task. The first task
that fails stops the others at their next chunk and its error is raised.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from davit.domain.errors import RunStopped

T = TypeVar("T")


class Relay:
    def __init__(self) -> None:
        self._calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Future[Any]] | None] = queue.Queue()
        self.failed = threading.Event()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Have the run's thread call `fn` and wait for its result (and for earlier posts)."""
        if self.failed.is_set():
            raise RunStopped("another unit of the run failed")
        done: Future[T] = Future()
        self._calls.put((fn, args, kwargs, done))
        return done.result()

    def post(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Have the run's thread call `fn` without waiting (calls keep their order); a
        failure surfaces at the task's next `check` or `call`. For checkpoints whose data is
        already durable: the next chunk need not wait for the event's commit."""
        if self.failed.is_set():
            raise RunStopped("another unit of the run failed")
        done: Future[Any] = Future()
        self._calls.put((fn, args, kwargs, done))
        return done

    @staticmethod
    def check(posted: Future[Any] | None) -> None:
        """Raise the failure of an earlier `post`, if it failed."""
        if posted is not None and posted.done() and posted.exception() is not None:
            raise posted.exception()  # type: ignore[misc]

    def serve(self, futures: Sequence[Future[Any]]) -> None:
        """Make the relayed calls until every task is done; then raise the first failure."""
        remaining = len(futures)

        def finished(_f: Future[Any]) -> None:
            self._calls.put(None)

        for f in futures:
            f.add_done_callback(finished)
        while remaining:
            item = self._calls.get()
            if item is None:
                remaining -= 1
                continue
            fn, args, kwargs, done = item
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the task that asked
                done.set_exception(exc)
        errors = [f.exception() for f in futures if f.exception() is not None]
        real = [e for e in errors if not isinstance(e, RunStopped)]
        if real or errors:
            raise (real or errors)[0]  # type: ignore[misc]


def run_parallel(tasks: Sequence[Callable[[Relay], None]], workers: int) -> None:
    relay = Relay()
    if not tasks:
        return
    with ThreadPoolExecutor(max(1, min(workers, len(tasks))), thread_name_prefix="davit-unit") as pool:

        def guarded(task: Callable[[Relay], None]) -> None:
            if relay.failed.is_set():
                raise RunStopped("another unit of the run failed")
            try:
                task(relay)
            except BaseException:
                relay.failed.set()
                raise

        futures = [pool.submit(guarded, t) for t in tasks]
        try:
            relay.serve(futures)
        finally:
            relay.failed.set()

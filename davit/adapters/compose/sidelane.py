"""Items moved on a second SSH connection, in a thread of their own, beside the run's thread.

A migration's image goes through the same pipeline as its volumes (`pipeline.py`), but its pace
is set by the source's export and the target's `docker load` more than by the wire: moved one
after the other, the image's seconds came on top of the data's. Moved in a side lane, the
image's transfer and load overlap the volumes' and bind paths'.

The lane's thread never touches the run's context (its events, its stop check, belong to the
run's thread): what it stored (`progress`) and each item it finished (`done`) go back through
queues that the run's thread drains, and it stops at its next chunk once the run's thread sets
`stop` (a cancel, a failure there). An item the lane finished but the run's thread did not
record yet is moved again on resume, sending only what the target's store lacks, as any item
cut short is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from davit.adapters.compose.pipeline import Moved
from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import RemoteHost

# moves one item on the lane's own connection: (host, item, on_stored, check_stop) -> what it did
Move = Callable[[RemoteHost, Item, Callable[[int, int], None], Callable[[], None]], Moved]
POLL_S = 0.5  # how often the run's thread looks at its stop check while it waits for the lane


class LaneStopped(Exception):
    """The run's thread asked the lane to stop: what ends the lane's item early."""


class SideLane:
    def __init__(self, connect: Callable[[], AbstractContextManager[RemoteHost]], move: Move, items: list[Item]) -> None:
        self.progress: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[Item, Moved]] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._connect, self._move, self._items = connect, move, items
        self._thread = threading.Thread(target=self._run, name="davit-side-lane", daemon=True)

    def start(self) -> SideLane:
        self._thread.start()
        return self

    def _check(self) -> None:
        if self.stop.is_set():
            raise LaneStopped("the run's thread stopped the side lane")

    def _run(self) -> None:
        try:
            with self._connect() as host:
                for item in self._items:
                    self._check()
                    moved = self._move(host, item, lambda n, b: self.progress.put((n, b)), self._check)
                    self.done.put((item, moved))
        except BaseException as exc:  # handed to the run's thread, which raises it in `wait`
            self.error = exc

    def raise_failure(self) -> None:
        """The lane's error, raised in the run's thread as soon as the lane failed: part of the
        run's stop check, so the volumes moving there (and the other lanes' waits) stop at their
        next chunk, not once they went through whole."""
        if self.error is not None and not isinstance(self.error, LaneStopped):
            raise self.error

    def pump(self, on_stored: Callable[[int, int], None], on_done: Callable[[Item, Moved], None]) -> None:
        """Hand what the lane did so far to the run's thread's callbacks."""
        while True:
            try:
                on_stored(*self.progress.get_nowait())
            except queue.Empty:
                break
        while True:
            try:
                on_done(*self.done.get_nowait())
            except queue.Empty:
                break

    def wait(
        self, check_stop: Callable[[], None], on_stored: Callable[[int, int], None], on_done: Callable[[Item, Moved], None]
    ) -> None:
        """Wait for the lane's last item, handing over what it did meanwhile; its error, raised."""
        while self._thread.is_alive():
            check_stop()
            self._thread.join(POLL_S)
            self.pump(on_stored, on_done)
        self.pump(on_stored, on_done)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the lane (if it still runs) and wait until its thread and connection are gone."""
        self.stop.set()
        self._thread.join()

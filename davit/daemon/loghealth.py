"""Whether davitd's event log takes writes, and what the daemon does while it does not.

The store (`davit/eventstore/sqlite.py`) asks this object what to do when a write fails for storage
reasons (a full disk, `ulimit -f`, an I/O error): `noticed` starts an outage (logged once,
and systemd hears why through `STATUS=`), `backoff` makes the append wait with exponential,
jittered, capped backoff before trying the very same append again, and `succeeded` ends the
outage and wakes every waiting append so they land at once. Appends are never dropped: the
daemon's own appends wait the outage out; a worker thread's checkpoint tries once and, if it
cannot be recorded, its run stops there (`EventLogStop`) and resumes after the outage.

When davitd stops during an outage it waits for the log a short while, then cancels what
still waits: whatever could not be recorded is recovered from the log at the next start (a run
found in progress is marked interrupted and resumed).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import anyio

from davit.daemon.notify import Notifier
from davit.domain.errors import DavitError

log = logging.getLogger("davitd.log")

INITIAL_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 5.0
REMIND_SECONDS = 300.0  # an outage still going on is logged again this often


class LogHealth:
    """One per daemon: the state of the event log's writes (a `WriteOutage` for the store)."""

    def __init__(self, notifier: Notifier, rng: random.Random | None = None) -> None:
        self._notifier = notifier
        self._rng = rng or random.Random()
        self._error: DavitError | None = None
        self._since = 0.0
        self._reminded = 0.0
        self._failures = 0
        self._recovered = anyio.Event()
        self.on_outage: Callable[[str], None] | None = None  # told once per outage (notifications)

    @property
    def failing(self) -> bool:
        return self._error is not None

    @property
    def problem(self) -> str | None:
        """Why the log cannot be written, for STATUS= and `davit` (None while it can)."""
        return None if self._error is None else f"event log cannot be written: {self._error}"

    def noticed(self, error: DavitError) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._error is None:
            self._error, self._since, self._reminded = error, now, now
            log.error("%s; runs stop at their next checkpoint and resume when it can be written again; retrying", self.problem)
            self._notifier.status(str(self.problem))
            if self.on_outage is not None:
                self.on_outage(str(self.problem))
        elif str(error) != str(self._error) or now - self._reminded >= REMIND_SECONDS:
            self._error, self._reminded = error, now
            log.error("%s (for %.0f s, %d failed writes); retrying", self.problem, now - self._since, self._failures)
            self._notifier.status(str(self.problem))

    async def backoff(self, error: DavitError) -> None:
        step = min(MAX_BACKOFF_SECONDS, INITIAL_BACKOFF_SECONDS * 2 ** min(self._failures, 16))
        recovered = self._recovered
        # Wake early when another write lands (the disk has room again).
        with anyio.move_on_after(step * self._rng.uniform(0.5, 1.0)):
            await recovered.wait()

    def succeeded(self) -> None:
        if self._error is None:
            return
        log.warning(
            "event log can be written again after %.1f s (%d failed writes); resuming",
            time.monotonic() - self._since,
            self._failures,
        )
        self._error, self._failures = None, 0
        self._recovered.set()
        self._recovered = anyio.Event()

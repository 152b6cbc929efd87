"""Evidence that a restore loads tables at once, for the parallel-restore tests: a run context
that keeps the order of step starts and ends (and the test's own marks), and a bounded wait for
what a server shows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import MemoryRunContext

DEADLINE = 60.0  # seconds: a bound on waiting for what the server shows, not a measure


@dataclass
class OrderedContext(MemoryRunContext):
    """A `MemoryRunContext` that also keeps the order of step starts and ends, and the test's marks."""

    order: list[tuple[str, str]] = field(default_factory=list)

    def step_started(self, step: str, *, commits: bool = False) -> None:
        self.order.append(("started", step))

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        self.order.append(("completed", step))
        super().step_completed(step, summary)

    def at(self, what: str, step: str) -> int:
        return self.order.index((what, step))


def wait_for(what: str, check: Callable[[], bool], failed: list[BaseException]) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        assert not failed, f"the restore failed while waiting for {what}: {failed[0]!r}"
        assert time.monotonic() < end, f"not seen within {DEADLINE}s: {what}"
        time.sleep(0.05)

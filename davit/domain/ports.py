"""Ports: the narrow roles the daemon asks of its adapters (the event store is used as it is,
`eventstore.sqlite.SqliteEventStore`, until a second store makes a port of it worth having).

Each is a `typing.Protocol`; adapters implement them without importing this module's
callers, and tests drive the daemon with fakes of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


class RunContext(Protocol):
    """What a job's work may ask of the executor. Called from a worker thread; each call that
    records something returns only once the event is durable."""

    run_id: str

    def cursor(self, step: str) -> dict[str, Any] | None: ...

    def step_done(self, step: str) -> bool: ...

    def step_started(self, step: str, *, commits: bool = False) -> None:
        """Record that `step` starts. `commits`: the step commits the run's result (a snapshot's
        publication); it raises `RunStopped` instead if a cancel was recorded first, and once
        it is recorded a cancel no longer applies."""
        ...

    def checkpoint(
        self,
        step: str,
        cursor: dict[str, Any],
        *,
        chunks_written: Sequence[str] = (),
        bytes_done: int = 0,
        bytes_stored: int = 0,
        items_done: int = 0,
    ) -> None: ...

    def step_total(self, step: str, *, bytes_total: int | None = None, items_total: int | None = None) -> None:
        """What `step` amounts to, when the work can tell (a scan, collection stats, sizes; an
        estimate is fine). Records nothing by itself: it rides on the step's next checkpoints,
        so progress adds no events to the log."""
        ...

    def step_completed(self, step: str, summary: dict[str, Any]) -> None: ...

    def step_handover(self, done: str, summary: dict[str, Any], next_step: str, *, commits: bool = False) -> None:
        """`step_completed(done, summary)` then `step_started(next_step, commits=commits)`, with
        the same outcomes (a cancel recorded first still wins over a committing `next_step`;
        `done` is recorded completed whatever happens to `next_step`), in one durable append."""
        ...

    def warn(self, message: str, step: str | None = None) -> None: ...

    def check_stop(self) -> None:
        """Raise `RunStopped` if the run was asked to stop (cancel or shutdown)."""
        ...


@runtime_checkable
class JobWork(Protocol):
    """The data work of one run, in blocking code that the executor runs in a worker thread.

    `prepare` checks preconditions once per run (not again on resume) and returns details
    worth recording; `run` performs the plan's steps, skipping done ones and continuing
    from checkpoints; `finish` seals the result and returns the run's summary.
    """

    def plan(self) -> list[str]: ...

    def prepare(self, ctx: RunContext) -> dict[str, Any]: ...

    def run(self, ctx: RunContext) -> None: ...

    def finish(self, ctx: RunContext) -> dict[str, Any]: ...


@runtime_checkable
class ReversibleWork(Protocol):
    """Optional for a `JobWork` whose failure must put things back (a migration restarts its
    source). When its run fails for good while running or verifying and `needs_rollback`
    says something was changed, the executor records `RunRollingBack`, calls `rollback`
    (which skips what is already undone, like `run` skips done steps; a daemon crash in the
    middle resumes it), then records `RunRolledBack` with the cause."""

    def needs_rollback(self, ctx: RunContext) -> bool: ...

    def rollback(self, ctx: RunContext) -> None: ...

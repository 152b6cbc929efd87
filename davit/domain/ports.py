"""Ports: the narrow roles the daemon asks of its adapters.

Each is a `typing.Protocol`; adapters implement them without importing this module's
callers, and tests drive the daemon with fakes of the same shape. The event log is two roles:
`RunLog` (what a writer asks: append, read a stream back, its version) and `LogReader` (what
a reader of the whole log asks: pages, tails, streams, the head); `EventLog` is both. The
stores (`eventstore/sqlite.py`, `eventstore/memory.py`) serve them and pass one contract suite
(`tests/contract/eventlog_contract.py`); audits (chain check, integrity check) stay on each
concrete store, which alone knows how it keeps its rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from davit.domain.daemons import DaemonBeat, DaemonSeen
from davit.domain.events import NewEvent, StoredEvent, StreamAppend


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


class RunLog(Protocol):
    """What a writer of the event log asks of it (the supervisor, a run's recorder, the job
    registry, a CLI request). Every append is durable when it returns, checked against the
    stream's `expected_version` (a stale one raises `ConcurrencyError` and writes nothing),
    and idempotent by event id (appending the same events again gives their first positions).
    `patient=False`: try once, even if the store would wait out a storage outage."""

    @property
    def writes_failing(self) -> bool:
        """True while the store cannot take writes (it waits them out); False if it cannot tell."""
        ...

    async def append(self, stream: str, expected_version: int, events: Sequence[NewEvent], *, patient: bool = True) -> list[int]:
        """Append `events` to `stream`, whose version must be `expected_version`; their positions."""
        ...

    async def append_atomic(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[int]:
        """Append to several streams at once: every part is written, or none is."""
        ...

    async def append_read_back(
        self, stream: str, expected_version: int, events: Sequence[NewEvent], *, patient: bool = True
    ) -> list[StoredEvent]:
        """`append`, giving back the events as a read of the stream would give them."""
        ...

    async def append_atomic_read_back(self, parts: Sequence[StreamAppend], *, patient: bool = True) -> list[StoredEvent]:
        """`append_atomic`, giving back the stored events of every part, in order."""
        ...

    async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        """The events of `stream` from `from_version` on, in version order."""
        ...

    async def stream_version(self, stream: str) -> int:
        """The version of the stream's last event; 0 for a stream with none."""
        ...


class LogReader(Protocol):
    """What a reader of the whole log asks of it (start-up folds, `davit history`, `status`,
    notifications). Positions are global and only grow; a reader that pages or tails from a
    position sees every later event exactly once, in order, while writers append.
    `stream_prefix` matches stream names literally (no wildcard characters)."""

    async def read_all(self, after_position: int = 0, limit: int = 1000, stream_prefix: str | None = None) -> list[StoredEvent]:
        """At most `limit` events after `after_position`, in position order."""
        ...

    def iter_all(self, after_position: int = 0, stream_prefix: str | None = None, page: int = 2000) -> AsyncIterator[StoredEvent]:
        """Every event after `after_position` there is now, read page by page."""
        ...

    def tail(
        self, after_position: int = 0, stream_prefix: str | None = None, poll_seconds: float = 0.2
    ) -> AsyncIterator[StoredEvent]:
        """Every event after `after_position`, then new ones as they are committed; never ends."""
        ...

    async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        """The events of `stream` from `from_version` on, in version order."""
        ...

    async def stream_version(self, stream: str) -> int:
        """The version of the stream's last event; 0 for a stream with none."""
        ...

    async def streams(self, prefix: str) -> list[str]:
        """The names of the streams starting with `prefix`, in the order of their first events."""
        ...

    async def head_position(self) -> int:
        """The position of the newest event; 0 for an empty log."""
        ...


class EventLog(RunLog, LogReader, Protocol):
    """Both roles: what davitd's parts that write and fold the whole log need (the supervisor)."""


@runtime_checkable
class DaemonRoster(Protocol):
    """Where the daemons sharing a log leave their heartbeats (a row each, replaced at each
    beat: not the log, which would grow by every beat). PostgreSQL and memory stores serve it;
    on SQLite the one daemon's heartbeat is its state directory's file (`daemon/heartbeat.py`)."""

    async def beat(self, beat: DaemonBeat) -> None: ...

    async def daemons(self) -> list[DaemonSeen]: ...

"""What a run's report draws, gathered from its stream: spans on a timeline (the wait in the
queue, each attempt, each step, the waits between attempts), marks (retries, interruptions,
resumes, warnings, cancels, the outcome) and the progress its checkpoints recorded.

Pure: it reads stored events (the log is the source of truth) and the clock it is handed, and
folds the same stream with `davit.domain.runs.fold` for the run's state and totals, so the
report says what `davit show` says. Times are seconds since the run was queued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from davit.domain import events as ev
from davit.domain.machine import TERMINAL
from davit.domain.runs import RunView, fold

RUN_LANE = "run"


@dataclass
class Span:
    """A bar on the timeline: `lane` is `run` or a step's name; `kind` says what it shows
    (queued, attempt, waiting, step) and `status` how it ended (done, retry, interrupted, ...;
    `running` while it has not)."""

    lane: str
    kind: str
    label: str
    start: float
    end: float | None = None
    status: str = "running"


@dataclass(frozen=True)
class Mark:
    """A moment on the timeline: `kind` is retry, interrupted, resumed, warning, cancel,
    verifying, rollback, succeeded, failed or cancelled; `text` says why (from the log)."""

    at: float
    kind: str
    text: str
    lane: str = RUN_LANE


@dataclass(frozen=True)
class Sample:
    """The run's progress as its checkpoints stood at `at` (summed over its steps)."""

    at: float
    bytes_done: int
    bytes_stored: int
    items_done: int


@dataclass
class RunPicture:
    view: RunView
    queued_at: datetime
    end: float  # seconds from queued_at to the last event (or to now, for a run still going)
    spans: list[Span] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def lanes(self) -> list[str]:
        """The run's lane, then its steps: planned order first, then any others as they appeared."""
        names = list(dict.fromkeys([*self.view.plan, *(s.lane for s in self.spans if s.kind == "step")]))
        return [RUN_LANE, *names]

    @property
    def warnings(self) -> list[Mark]:
        return [m for m in self.marks if m.kind == "warning"]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def picture(run_id: str, stored: Sequence[ev.StoredEvent], now: datetime) -> RunPicture:
    """The picture of the run `run_id` from its stream `stored` (in version order)."""
    if not stored:
        raise ValueError(f"run {run_id} has no events")
    view = fold(run_id, list(stored))
    builder = _Builder(parse_time(stored[0].recorded_at))
    for item in stored:
        event = ev.decode(item)
        if event is not None:
            builder.take(event, builder.seconds(item.recorded_at))
    last = builder.seconds(stored[-1].recorded_at)
    end = last if view.state in TERMINAL else max(last, (now - builder.origin).total_seconds())
    builder.close_all(end, "running")
    return RunPicture(view, builder.origin, end, builder.spans, builder.marks, builder.samples)


class _Builder:
    """Walks the stream once, opening and closing spans as the events say."""

    def __init__(self, origin: datetime) -> None:
        self.origin = origin
        self.spans: list[Span] = []
        self.marks: list[Mark] = []
        self.samples: list[Sample] = []
        self.progress: dict[str, tuple[int, int, int]] = {}
        self.run_span: Span | None = None
        self.steps: dict[str, Span] = {}
        self.last_at = 0.0  # when the run's stream last recorded anything
        self.handlers: dict[type[ev.Event], Callable[[Any, float], None]] = {
            ev.RunQueued: self._queued,
            ev.RunPreparing: self._preparing,
            ev.StepStarted: self._step_started,
            ev.StepCompleted: self._step_completed,
            ev.CheckpointRecorded: self._checkpoint,
            ev.RunWarning: self._warning,
            ev.RunWaitingRetry: self._waiting_retry,
            ev.RunInterrupted: self._interrupted,
            ev.RunCancelling: self._cancelling,
            ev.CancelIgnored: self._cancel_ignored,
            ev.RunVerifying: self._verifying,
            ev.RunRollingBack: self._rolling_back,
            ev.RunSucceeded: self._succeeded,
            ev.RunFailed: self._failed,
            ev.RunCancelled: self._cancelled,
            ev.RunRolledBack: self._rolled_back,
        }

    def seconds(self, recorded_at: str) -> float:
        return max(0.0, (parse_time(recorded_at) - self.origin).total_seconds())

    def take(self, event: ev.Event, at: float) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event, at)
        self.last_at = at

    # --- spans ---------------------------------------------------------------------------------

    def open_run_span(self, kind: str, label: str, at: float) -> None:
        self.close_run_span(at, "done")
        self.run_span = Span(RUN_LANE, kind, label, at)
        self.spans.append(self.run_span)

    def close_run_span(self, at: float, status: str) -> None:
        if self.run_span is not None:
            self.run_span.end, self.run_span.status = at, status
            self.run_span = None

    def close_steps(self, at: float, status: str) -> None:
        for span in self.steps.values():
            span.end, span.status = at, status
        self.steps.clear()

    def close_all(self, at: float, status: str) -> None:
        self.close_steps(at, status)
        self.close_run_span(at, status)

    def end_attempt(self, at: float, status: str, waiting: str | None) -> None:
        self.close_all(at, status)
        if waiting is not None:
            self.open_run_span("waiting", waiting, at)

    # --- handlers, one per event type that shows -------------------------------------------------

    def _queued(self, event: ev.RunQueued, at: float) -> None:
        self.open_run_span("queued", f"queued ({event.reason})", at)

    def _preparing(self, event: ev.RunPreparing, at: float) -> None:
        if self.run_span is not None and self.run_span.kind == "waiting":
            self.marks.append(Mark(at, "resumed", f"attempt {event.attempt} starts after: {self.run_span.label}"))
        self.open_run_span("attempt", f"attempt {event.attempt}", at)

    def _step_started(self, event: ev.StepStarted, at: float) -> None:
        if event.step in self.steps:
            self.steps.pop(event.step).end = at
        span = Span(event.step, "step", event.step + (" (commits)" if event.commits else ""), at)
        self.steps[event.step] = span
        self.spans.append(span)

    def _step_completed(self, event: ev.StepCompleted, at: float) -> None:
        span = self.steps.pop(event.step, None)
        if span is not None:
            span.end, span.status = at, "done"

    def _checkpoint(self, event: ev.CheckpointRecorded, at: float) -> None:
        self.progress[event.step] = (event.bytes_done, event.bytes_stored, event.items_done)
        done, stored, items = (sum(p[i] for p in self.progress.values()) for i in range(3))
        self.samples.append(Sample(at, done, stored, items))

    def _warning(self, event: ev.RunWarning, at: float) -> None:
        self.marks.append(Mark(at, "warning", event.message, event.step or RUN_LANE))

    def _waiting_retry(self, event: ev.RunWaitingRetry, at: float) -> None:
        self.marks.append(Mark(at, "retry", f"attempt {event.attempt} failed ({event.error_type}): {event.error}"))
        self.end_attempt(at, "retry", f"waiting to retry at {event.retry_at}")

    def _interrupted(self, event: ev.RunInterrupted, at: float) -> None:
        # An interruption is recorded when davitd finds the run at its next start: the attempt
        # was last seen alive at the run's previous event, so its bars end there, not here.
        self.marks.append(Mark(at, "interrupted", event.reason))
        self.end_attempt(self.last_at, "interrupted", f"interrupted: {event.reason}")

    def _cancelling(self, event: ev.RunCancelling, at: float) -> None:
        self.marks.append(Mark(at, "cancel", f"cancel: {event.reason}"))

    def _cancel_ignored(self, event: ev.CancelIgnored, at: float) -> None:
        self.marks.append(Mark(at, "cancel", f"cancel ignored ({event.reason}): step {event.step} commits the run"))

    def _verifying(self, _event: ev.RunVerifying, at: float) -> None:
        self.marks.append(Mark(at, "verifying", "verifying"))

    def _rolling_back(self, event: ev.RunRollingBack, at: float) -> None:
        self.marks.append(Mark(at, "rollback", f"rolling back: {event.cause}"))

    def _succeeded(self, event: ev.RunSucceeded, at: float) -> None:
        self.marks.append(Mark(at, "succeeded", f"succeeded, snapshot {event.snapshot_id or '-'}"))
        self.end_attempt(at, "done", None)

    def _failed(self, event: ev.RunFailed, at: float) -> None:
        self.marks.append(Mark(at, "failed", f"{event.error_type}: {event.error}"))
        self.end_attempt(at, "failed", None)

    def _cancelled(self, _event: ev.RunCancelled, at: float) -> None:
        self.marks.append(Mark(at, "cancelled", "cancelled"))
        self.end_attempt(at, "cancelled", None)

    def _rolled_back(self, event: ev.RunRolledBack, at: float) -> None:
        self.marks.append(Mark(at, "cancelled", f"rolled back: {event.cause}"))
        self.end_attempt(at, "rolled_back", None)

"""A run's state, steps and progress as the fold of its events, and nothing else.

`fold` replays a run stream through the run machine (`davit/domain/machine.py`): every event that
names a trigger must be legal from the state reached so far, or the fold raises
`IllegalTransition`; step and checkpoint events are legal only while the run is active, and a
committing step only while it works. `admit` applies the same rules to events not yet written,
so the recorder refuses what the fold would. Replaying the log therefore gives the same view the
live daemon showed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from davit.domain import events as ev
from davit.domain.errors import IllegalTransition
from davit.domain.machine import COMMITTABLE, RECORDING, TERMINAL, RunState, next_state
from davit.domain.progress import MAX_SAMPLES, Progress, Sample, plausible, progress, timestamp

# States in which no daemon holds the run: entering one ends the lease (a requeued run is
# claimed again by whichever daemon dispatches it).
UNOWNED = TERMINAL | {RunState.QUEUED, RunState.INTERRUPTED, RunState.WAITING_RETRY}

# The cause of a rollback that a cancel started (a migration cancelled after it stopped its
# source ends `rolled_back` with it): the CLI tells such a cancel from a failure by it.
CANCELLED_BY_OPERATOR = "cancelled by operator"


@dataclass
class StepView:
    name: str
    status: str = "pending"  # pending | running | done
    cursor: dict[str, Any] | None = None
    checkpoints: int = 0
    bytes_done: int = 0
    bytes_stored: int = 0
    items_done: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    bytes_total: int | None = None  # None: the step's work could not tell (or an older log)
    items_total: int | None = None
    # Recent checkpoints (when, how much), for the rate: since the run last started, bounded.
    samples: list[Sample] = field(default_factory=list)

    def sample(self, at: str) -> None:
        when = timestamp(at)
        if when is not None:
            self.samples.append(Sample(when, self.bytes_done, self.items_done))
            del self.samples[:-MAX_SAMPLES]

    def progress(self) -> Progress:
        return progress(self.samples, self.bytes_total, self.items_total, self.bytes_done, self.items_done)


@dataclass
class RunView:
    run_id: str
    job: str = ""
    kind: str = ""
    revision: str = ""
    reason: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    state: RunState = RunState.QUEUED
    version: int = 0
    attempt: int = 0
    plan: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, StepView] = field(default_factory=dict)
    checkpoints: int = 0
    chunks_written: int = 0
    error: str | None = None
    error_type: str | None = None
    retry_at: str | None = None
    snapshot_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    interruptions: int = 0
    committed_step: str | None = None  # the committing step, once it has started
    cancel_ignored: dict[str, str] | None = None  # the last cancel that came after it
    queued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_position: int = 0
    # The lease of the daemon executing the run (several daemons on one log); None when none
    # holds it: never claimed, or the run left the states a daemon works in (see `_record`).
    owner: str | None = None
    lease_token: str | None = None
    lease_seconds: float = 0.0
    lease_expires_at: str | None = None

    @property
    def bytes_done(self) -> int:
        return sum(s.bytes_done for s in self.steps.values())

    @property
    def items_done(self) -> int:
        return sum(s.items_done for s in self.steps.values())

    def step(self, name: str) -> StepView:
        return self.steps.setdefault(name, StepView(name))

    @property
    def current_step(self) -> StepView | None:
        """The step the run is working on: the last one started and not done."""
        running = [s for s in self.steps.values() if s.status == "running"]
        return running[-1] if running else None

    @property
    def cancelled(self) -> bool:
        """Ended by an operator's cancel: `cancelled`, or rolled back because of it."""
        return self.state is RunState.CANCELLED or (self.state is RunState.ROLLED_BACK and self.error == CANCELLED_BY_OPERATOR)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "kind": self.kind,
            "state": self.state.value,
            "reason": self.reason,
            "attempt": self.attempt,
            "plan": self.plan,
            "steps": {
                n: {
                    "status": s.status,
                    "checkpoints": s.checkpoints,
                    "cursor": s.cursor,
                    "bytes_done": s.bytes_done,
                    "items_done": s.items_done,
                    "bytes_total": s.bytes_total,
                    "items_total": s.items_total,
                    "summary": s.summary,
                }
                for n, s in self.steps.items()
            },
            "checkpoints": self.checkpoints,
            "chunks_written": self.chunks_written,
            "bytes_done": self.bytes_done,
            "items_done": self.items_done,
            "error": self.error,
            "error_type": self.error_type,
            "retry_at": self.retry_at,
            "snapshot_id": self.snapshot_id,
            "summary": self.summary,
            "warnings": self.warnings,
            "interruptions": self.interruptions,
            "committed_step": self.committed_step,
            "cancel_ignored": self.cancel_ignored,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "owner": self.owner,
            "lease_expires_at": self.lease_expires_at,
        }


def fold(run_id: str, stored: list[ev.StoredEvent]) -> RunView:
    view = RunView(run_id)
    for item in stored:
        apply(view, item)
    return view


def apply(view: RunView, item: ev.StoredEvent) -> RunView:
    event = ev.decode(item)
    view.version = item.version
    view.last_position = item.position
    if event is None:
        return view
    view.state, view.committed_step = _legal(view.run_id, view.state, view.committed_step, event)
    _record(view, event, item.recorded_at)
    return view


def admit(view: RunView, events: Sequence[ev.Event]) -> RunState:
    """Raise `IllegalTransition` unless `events`, appended in this order now, fold legally;
    the run's state once they are."""
    state, committed = view.state, view.committed_step
    for event in events:
        state, committed = _legal(view.run_id, state, committed, event)
    return state


def _legal(run_id: str, state: RunState, committed: str | None, event: ev.Event) -> tuple[RunState, str | None]:
    """The state and committing step after `event`, or `IllegalTransition` if the run refuses it."""
    if event.trigger is not None:
        return next_state(run_id, state, event.trigger, committed), committed
    if isinstance(event, (ev.StepStarted, ev.CheckpointRecorded, ev.StepCompleted)) and state not in RECORDING:
        raise IllegalTransition(run_id, state.value, event.type_name())
    if isinstance(event, (ev.RunClaimed, ev.LeaseRenewed)) and state in TERMINAL:
        raise IllegalTransition(run_id, state.value, event.type_name())
    if isinstance(event, ev.StepStarted) and event.commits:
        if state not in COMMITTABLE:
            raise IllegalTransition(run_id, state.value, f"commit:{event.step}")
        return state, committed or event.step
    return state, committed


def _record(view: RunView, event: ev.Event, at: str) -> None:
    if event.trigger is not None and view.state in UNOWNED:
        # No daemon works on a run in these states: whoever picks it up claims it anew.
        view.owner = view.lease_token = view.lease_expires_at = None
    match event:
        case ev.RunClaimed():
            view.owner, view.lease_token = event.owner, event.token
            view.lease_seconds, view.lease_expires_at = event.lease_seconds, event.expires_at
        case ev.LeaseRenewed():
            if event.token == view.lease_token:
                view.lease_expires_at = event.expires_at
        case ev.RunQueued():
            view.job, view.kind, view.revision = event.job, event.kind, event.revision
            view.spec, view.reason, view.queued_at = event.spec, event.reason, at
        case ev.RunPreparing():
            view.attempt = event.attempt
            view.error = view.error_type = view.retry_at = None
            view.started_at = view.started_at or at
        case ev.RunStarted():
            view.plan, view.details = event.plan, event.details
            for name in event.plan:
                view.step(name)
            for step in view.steps.values():
                # the rate counts from here: time the run spent stopped is not its pace
                step.samples.clear()
                step.sample(at)
        case ev.StepStarted():
            step = view.step(event.step)
            step.status = "running" if step.status != "done" else "done"
            step.samples.clear()
            step.sample(at)
        case ev.CheckpointRecorded():
            _checkpoint(view, event, at)
        case ev.StepCompleted():
            step = view.step(event.step)
            step.status, step.summary = "done", event.summary
        case ev.RunWarning():
            view.warnings.append(event.message)
        case ev.RunSucceeded():
            view.snapshot_id, view.summary, view.finished_at = event.snapshot_id, event.summary, at
        case ev.RunFailed():
            view.error, view.error_type, view.finished_at = event.error, event.error_type, at
        case ev.RunWaitingRetry():
            view.error, view.error_type, view.retry_at = event.error, event.error_type, event.retry_at
        case ev.RunInterrupted():
            view.interruptions += 1
            view.error = event.reason
        case ev.RunRollingBack():
            view.error = event.cause
        case ev.RunRolledBack():
            view.error, view.finished_at = event.cause, at
        case ev.RunCancelled():
            view.finished_at = at
        case ev.CancelIgnored():
            view.cancel_ignored = {"reason": event.reason, "step": event.step, "state": event.state}
        case _:
            pass


def _checkpoint(view: RunView, event: ev.CheckpointRecorded, at: str) -> None:
    step = view.step(event.step)
    step.cursor = event.cursor
    step.checkpoints += 1
    step.bytes_done, step.bytes_stored, step.items_done = (
        event.bytes_done,
        event.bytes_stored,
        event.items_done,
    )
    # (a checkpoint without totals keeps those an earlier one gave: older logs have none)
    # (one no step could have, a forged one, reads as unknown: `plausible`)
    bytes_total, items_total = plausible(event.bytes_total), plausible(event.items_total)
    step.bytes_total = bytes_total if bytes_total is not None else step.bytes_total
    step.items_total = items_total if items_total is not None else step.items_total
    step.sample(at)
    view.checkpoints += 1
    view.chunks_written += len(event.chunks_written)


def staging_unneeded(views: Iterable[RunView]) -> set[str]:
    """Runs whose staging nothing will resume from: every ended run but a failed one (an operator
    may `davit resume` it, after a full disk for example), and a failed run once a run of its job
    queued after it has succeeded (its snapshot supersedes whatever the failed run would publish)."""
    views = list(views)
    last_success: dict[str, str] = {}
    for view in views:
        if view.state is RunState.SUCCEEDED and view.queued_at is not None:
            last_success[view.job] = max(last_success.get(view.job, ""), view.queued_at)

    def superseded(view: RunView) -> bool:
        return view.queued_at is not None and view.queued_at < last_success.get(view.job, "")

    return {v.run_id for v in views if v.state in TERMINAL and (v.state is not RunState.FAILED or superseded(v))}

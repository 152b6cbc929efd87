"""The run lifecycle as data: `RunState` and `Trigger` enums and a table of (trigger, sources,
dest) rows. Every question about states is asked of the table (`allowed`, `sources`, and the
named sets below derived from it), so no other module writes a row of it out again.

A synchronous `transitions.Machine` built from the table decides which transitions are legal;
it holds no run and does no I/O (callbacks would be the wrong place for work: the executor
in `daemon/` does the work and appends the event that records it). A run's state is never
stored: it is the fold of the run's events (`davit/domain/runs.py`), each of which names a trigger.

One fact besides the state also decides: whether the run's committing step has started (a
backup's `publish`, a migration's `finalize`; the step is started with `commits`). From then on
what that step commits exists, or will, whatever follows, so the run only goes forward: a cancel
is refused (`AlreadyCommitted`; the executor records it as `CancelIgnored`) and the run ends as
its work does. And a run that is already cancelling must not start such a step: the first of
the two to be recorded wins, and the run's end says truthfully what was done.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Any

from transitions.extensions.markup import MarkupMachine

from davit.domain.errors import AlreadyCommitted, IllegalTransition


class RunState(StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WAITING_RETRY = "waiting_retry"
    INTERRUPTED = "interrupted"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class Trigger(StrEnum):
    """What moves a run from one state to another; each is named by exactly one run event
    (`davit/domain/events.py`, its `trigger`), so the fold of the events is the run's state."""

    PREPARE = "prepare"
    START = "start"
    VERIFY = "verify"
    SUCCEED = "succeed"
    FAIL = "fail"
    WAIT_RETRY = "wait_retry"
    INTERRUPT = "interrupt"
    REQUEUE = "requeue"
    CANCEL = "cancel"
    CANCELLED = "cancelled"
    ROLL_BACK = "roll_back"
    ROLLED_BACK = "rolled_back"


S = RunState
T = Trigger
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.ROLLED_BACK})
ACTIVE = frozenset({S.PREPARING, S.RUNNING, S.VERIFYING, S.ROLLING_BACK})
NON_TERMINAL = frozenset(S) - TERMINAL
# states in which a live process does the run's work: found so at start-up, the run had no owner
WORKING = frozenset({S.PREPARING, S.RUNNING, S.VERIFYING})
# states in which step and checkpoint events may be recorded (a chunk in flight when a cancel
# arrives still becomes durable and is recorded)
RECORDING = ACTIVE | {S.CANCELLING}
# states in which a committing step may start, and the triggers refused once one has started
COMMITTABLE = WORKING
REFUSED_ONCE_COMMITTED = frozenset({T.CANCEL})

# (trigger, sources, dest). Interrupt comes from states where a live process did work;
# cancel from every state that has not finished; rollback only once work has started (also
# from cancelling: a cancel after a migration stopped its source puts the source back).
# `failed` is final unless an operator resumes the run (`davit resume`), which requeues it.
TRANSITIONS: tuple[tuple[Trigger, frozenset[RunState], RunState], ...] = (
    (T.PREPARE, frozenset({S.QUEUED}), S.PREPARING),
    (T.START, frozenset({S.PREPARING}), S.RUNNING),
    (T.VERIFY, frozenset({S.RUNNING}), S.VERIFYING),
    (T.SUCCEED, frozenset({S.VERIFYING}), S.SUCCEEDED),
    (T.FAIL, NON_TERMINAL - {S.CANCELLING}, S.FAILED),
    (T.WAIT_RETRY, WORKING, S.WAITING_RETRY),
    (T.INTERRUPT, WORKING | {S.ROLLING_BACK}, S.INTERRUPTED),
    (T.REQUEUE, frozenset({S.INTERRUPTED, S.WAITING_RETRY, S.FAILED}), S.QUEUED),
    (T.CANCEL, NON_TERMINAL - {S.CANCELLING, S.ROLLING_BACK}, S.CANCELLING),
    (T.CANCELLED, frozenset({S.CANCELLING}), S.CANCELLED),
    (T.ROLL_BACK, frozenset({S.RUNNING, S.VERIFYING, S.INTERRUPTED, S.CANCELLING}), S.ROLLING_BACK),
    (T.ROLLED_BACK, frozenset({S.ROLLING_BACK}), S.ROLLED_BACK),
)
TRIGGERS: tuple[Trigger, ...] = tuple(row[0] for row in TRANSITIONS)


@cache
def _machine() -> MarkupMachine:
    # A MarkupMachine decides like a plain Machine and can also export itself (`markup`), so
    # the README's drawing comes from the very machine that judges the runs.
    machine = MarkupMachine(
        model=None,
        states=[{"name": s.value, "final": s in TERMINAL} for s in RunState],
        initial=S.QUEUED.value,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )
    for trigger, sources, dest in TRANSITIONS:
        machine.add_transition(trigger.value, [s.value for s in sorted(sources)], dest.value)
    return machine


def next_state(run_id: str, state: RunState, trigger: str, committed: str | None = None) -> RunState:
    """The state after `trigger` from `state`, or `IllegalTransition` if the table refuses
    (`AlreadyCommitted` if only the run's started committing step, `committed`, refuses it)."""
    if trigger not in TRIGGERS:
        raise IllegalTransition(run_id, state.value, str(trigger))
    found = _machine().get_transitions(trigger=str(trigger), source=state.value)
    if not found:
        raise IllegalTransition(run_id, state.value, str(trigger))
    if committed is not None and trigger in REFUSED_ONCE_COMMITTED:
        raise AlreadyCommitted(run_id, state.value, str(trigger), committed)
    return RunState(str(found[0].dest))


def allowed(state: RunState, trigger: str, committed: str | None = None) -> bool:
    """Whether the table lets `trigger` move a run in `state` (and, given `committed`, the run's
    started committing step, whether that step still lets it)."""
    if committed is not None and trigger in REFUSED_ONCE_COMMITTED:
        return False
    return trigger in TRIGGERS and bool(_machine().get_transitions(trigger=str(trigger), source=state.value))


def sources(*triggers: Trigger) -> frozenset[RunState]:
    """The states any of `triggers` may leave, as the table says."""
    return frozenset(s for s in RunState if any(allowed(s, t) for t in triggers))


# Questions the daemon asks, answered by the table rather than written out again:
# a run an operator may resume (`davit resume`)
RESUMABLE = sources(T.REQUEUE)
# a run an operator's cancel applies to (unless its committing step has started)
CANCELLABLE = sources(T.CANCEL)
# a run waiting for an executor: to prepare it, or to finish a rollback a crash cut short
DISPATCHABLE = sources(T.PREPARE, T.ROLLED_BACK)
# a run whose work failed for good here is rolled back, if the work changed something
ROLLS_BACK_ON_FAILURE = WORKING & sources(T.ROLL_BACK)


def markup() -> dict[str, Any]:
    """The machine as transitions' `MarkupMachine` exports it: states, initial state, and one
    row per (trigger, source, dest); `davit/domain/diagram.py` draws it for the README."""
    return dict(_machine().markup)

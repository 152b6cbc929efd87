"""The run lifecycle as data: a `RunState` enum and a table of (trigger, sources, dest) rows.

A synchronous `transitions.Machine` built from the table decides which transitions are legal;
it holds no run and does no I/O (callbacks would be the wrong place for work: the executor
in `daemon/` does the work and appends the event that records it). A run's state is never
stored: it is the fold of the run's events (`domain/runs.py`), each of which names a trigger.

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

from transitions import Machine

from domain.errors import AlreadyCommitted, IllegalTransition


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


S = RunState
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.ROLLED_BACK})
ACTIVE = frozenset({S.PREPARING, S.RUNNING, S.VERIFYING, S.ROLLING_BACK})
NON_TERMINAL = frozenset(S) - TERMINAL
WORKING = frozenset({S.PREPARING, S.RUNNING, S.VERIFYING})
# states in which step and checkpoint events may be recorded (a chunk in flight when a cancel
# arrives still becomes durable and is recorded)
RECORDING = ACTIVE | {S.CANCELLING}
# states in which a committing step may start, and the triggers refused once one has started
COMMITTABLE = WORKING
REFUSED_ONCE_COMMITTED = frozenset({"cancel"})

# (trigger, sources, dest). Interrupt comes from states where a live process did work;
# cancel from every state that has not finished; rollback only once work has started (also
# from cancelling: a cancel after a migration stopped its source puts the source back).
# `failed` is final unless an operator resumes the run (`davit resume`), which requeues it.
TRANSITIONS: tuple[tuple[str, frozenset[RunState], RunState], ...] = (
    ("prepare", frozenset({S.QUEUED}), S.PREPARING),
    ("start", frozenset({S.PREPARING}), S.RUNNING),
    ("verify", frozenset({S.RUNNING}), S.VERIFYING),
    ("succeed", frozenset({S.VERIFYING}), S.SUCCEEDED),
    ("fail", NON_TERMINAL - {S.CANCELLING}, S.FAILED),
    ("wait_retry", WORKING, S.WAITING_RETRY),
    ("interrupt", WORKING | {S.ROLLING_BACK}, S.INTERRUPTED),
    ("requeue", frozenset({S.INTERRUPTED, S.WAITING_RETRY, S.FAILED}), S.QUEUED),
    ("cancel", NON_TERMINAL - {S.CANCELLING, S.ROLLING_BACK}, S.CANCELLING),
    ("cancelled", frozenset({S.CANCELLING}), S.CANCELLED),
    ("roll_back", frozenset({S.RUNNING, S.VERIFYING, S.INTERRUPTED, S.CANCELLING}), S.ROLLING_BACK),
    ("rolled_back", frozenset({S.ROLLING_BACK}), S.ROLLED_BACK),
)
TRIGGERS: tuple[str, ...] = tuple(row[0] for row in TRANSITIONS)


@cache
def _machine() -> Machine:
    machine = Machine(
        model=None,
        states=[s.value for s in RunState],
        initial=S.QUEUED.value,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )
    for trigger, sources, dest in TRANSITIONS:
        machine.add_transition(trigger, [s.value for s in sorted(sources)], dest.value)
    return machine


def next_state(run_id: str, state: RunState, trigger: str, committed: str | None = None) -> RunState:
    """The state after `trigger` from `state`, or `IllegalTransition` if the table refuses
    (`AlreadyCommitted` if only the run's started committing step, `committed`, refuses it)."""
    if trigger not in TRIGGERS:
        raise IllegalTransition(run_id, state.value, trigger)
    found = _machine().get_transitions(trigger=trigger, source=state.value)
    if not found:
        raise IllegalTransition(run_id, state.value, trigger)
    if committed is not None and trigger in REFUSED_ONCE_COMMITTED:
        raise AlreadyCommitted(run_id, state.value, trigger, committed)
    return RunState(str(found[0].dest))


def allowed(state: RunState, trigger: str, committed: str | None = None) -> bool:
    if committed is not None and trigger in REFUSED_ONCE_COMMITTED:
        return False
    return trigger in TRIGGERS and bool(_machine().get_transitions(trigger=trigger, source=state.value))

"""The run machine, table-driven: every (state, trigger) pair is either listed here as legal
with its destination, or must be refused with IllegalTransition."""

from __future__ import annotations

import pytest

from domain.errors import AlreadyCommitted, IllegalTransition
from domain.machine import TRIGGERS, RunState, allowed, next_state

S = RunState
# Written out by hand from the lifecycle in DESIGN.md, not derived from the implementation.
LEGAL: dict[tuple[RunState, str], RunState] = {
    (S.QUEUED, "prepare"): S.PREPARING,
    (S.PREPARING, "start"): S.RUNNING,
    (S.RUNNING, "verify"): S.VERIFYING,
    (S.VERIFYING, "succeed"): S.SUCCEEDED,
    **{(s, "fail"): S.FAILED for s in (S.QUEUED, S.PREPARING, S.RUNNING, S.VERIFYING, S.WAITING_RETRY,
                                        S.INTERRUPTED, S.ROLLING_BACK)},
    **{(s, "wait_retry"): S.WAITING_RETRY for s in (S.PREPARING, S.RUNNING, S.VERIFYING)},
    **{(s, "interrupt"): S.INTERRUPTED for s in (S.PREPARING, S.RUNNING, S.VERIFYING, S.ROLLING_BACK)},
    **{(s, "requeue"): S.QUEUED for s in (S.INTERRUPTED, S.WAITING_RETRY, S.FAILED)},
    **{(s, "cancel"): S.CANCELLING for s in (S.QUEUED, S.PREPARING, S.RUNNING, S.VERIFYING, S.WAITING_RETRY,
                                             S.INTERRUPTED)},
    (S.CANCELLING, "cancelled"): S.CANCELLED,
    **{(s, "roll_back"): S.ROLLING_BACK for s in (S.RUNNING, S.VERIFYING, S.INTERRUPTED, S.CANCELLING)},
    (S.ROLLING_BACK, "rolled_back"): S.ROLLED_BACK,
}

ALL_PAIRS = [(state, trigger) for state in RunState for trigger in TRIGGERS]


@pytest.mark.parametrize(("state", "trigger"), [p for p in ALL_PAIRS if p in LEGAL],
                         ids=lambda v: v.value if isinstance(v, RunState) else v)
def test_legal_transition_reaches_its_destination(state: RunState, trigger: str) -> None:
    assert allowed(state, trigger)
    assert next_state("r1", state, trigger) is LEGAL[(state, trigger)]


@pytest.mark.parametrize(("state", "trigger"), [p for p in ALL_PAIRS if p not in LEGAL],
                         ids=lambda v: v.value if isinstance(v, RunState) else v)
def test_illegal_transition_is_refused_not_ignored(state: RunState, trigger: str) -> None:
    assert not allowed(state, trigger)
    with pytest.raises(IllegalTransition) as err:
        next_state("r1", state, trigger)
    assert err.value.state == state.value and err.value.trigger == trigger


def test_unknown_trigger_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        next_state("r1", RunState.QUEUED, "teleport")


def test_terminal_states_accept_nothing_but_an_operator_resume_of_a_failed_run() -> None:
    for state in (S.SUCCEEDED, S.CANCELLED, S.ROLLED_BACK):
        assert not any(allowed(state, t) for t in TRIGGERS)
    assert [t for t in TRIGGERS if allowed(S.FAILED, t)] == ["requeue"]


# Once a run's committing step (a backup's publish) has started, only the cancel rows change.
CANCELLABLE = [s for s in RunState if (s, "cancel") in LEGAL]


@pytest.mark.parametrize("state", CANCELLABLE, ids=lambda s: s.value)
def test_a_cancel_once_the_committing_step_started_is_refused_naming_the_step(state: RunState) -> None:
    assert not allowed(state, "cancel", committed="publish")
    with pytest.raises(AlreadyCommitted) as err:
        next_state("r1", state, "cancel", committed="publish")
    assert err.value.step == "publish" and err.value.state == state.value
    assert "'publish' has started, which commits the run" in str(err.value)


@pytest.mark.parametrize(("state", "trigger"), [p for p in LEGAL if p[1] != "cancel"],
                         ids=lambda v: v.value if isinstance(v, RunState) else v)
def test_a_committed_run_keeps_every_other_legal_transition(state: RunState, trigger: str) -> None:
    assert next_state("r1", state, trigger, committed="publish") is LEGAL[(state, trigger)]


def test_a_cancel_the_table_refuses_anyway_is_not_reported_as_too_late() -> None:
    with pytest.raises(IllegalTransition) as err:
        next_state("r1", S.SUCCEEDED, "cancel", committed="publish")
    assert not isinstance(err.value, AlreadyCommitted)

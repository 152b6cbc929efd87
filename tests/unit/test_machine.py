"""The run machine, table-driven: every (state, trigger) pair is either listed here as legal
with its destination, or must be refused with IllegalTransition."""

from __future__ import annotations

from collections import Counter

import pytest

from davit.domain import events as ev
from davit.domain import machine
from davit.domain.commands import COMMAND_TYPES
from davit.domain.errors import AlreadyCommitted, IllegalTransition
from davit.domain.machine import TERMINAL, TRIGGERS, RunState, Trigger, allowed, markup, next_state, sources

S = RunState
# Written out by hand from the lifecycle in DESIGN.md, not derived from the implementation.
LEGAL: dict[tuple[RunState, str], RunState] = {
    (S.QUEUED, "prepare"): S.PREPARING,
    (S.PREPARING, "start"): S.RUNNING,
    (S.RUNNING, "verify"): S.VERIFYING,
    (S.VERIFYING, "succeed"): S.SUCCEEDED,
    **{
        (s, "fail"): S.FAILED
        for s in (S.QUEUED, S.PREPARING, S.RUNNING, S.VERIFYING, S.WAITING_RETRY, S.INTERRUPTED, S.ROLLING_BACK)
    },
    **{(s, "wait_retry"): S.WAITING_RETRY for s in (S.PREPARING, S.RUNNING, S.VERIFYING)},
    **{(s, "interrupt"): S.INTERRUPTED for s in (S.PREPARING, S.RUNNING, S.VERIFYING, S.ROLLING_BACK)},
    **{(s, "requeue"): S.QUEUED for s in (S.INTERRUPTED, S.WAITING_RETRY, S.FAILED)},
    **{(s, "cancel"): S.CANCELLING for s in (S.QUEUED, S.PREPARING, S.RUNNING, S.VERIFYING, S.WAITING_RETRY, S.INTERRUPTED)},
    (S.CANCELLING, "cancelled"): S.CANCELLED,
    **{(s, "roll_back"): S.ROLLING_BACK for s in (S.RUNNING, S.VERIFYING, S.INTERRUPTED, S.CANCELLING)},
    (S.ROLLING_BACK, "rolled_back"): S.ROLLED_BACK,
}

ALL_PAIRS = [(state, trigger) for state in RunState for trigger in TRIGGERS]


@pytest.mark.parametrize(
    ("state", "trigger"), [p for p in ALL_PAIRS if p in LEGAL], ids=lambda v: v.value if isinstance(v, RunState) else v
)
def test_legal_transition_reaches_its_destination(state: RunState, trigger: str) -> None:
    assert allowed(state, trigger)
    assert next_state("r1", state, trigger) is LEGAL[(state, trigger)]


@pytest.mark.parametrize(
    ("state", "trigger"), [p for p in ALL_PAIRS if p not in LEGAL], ids=lambda v: v.value if isinstance(v, RunState) else v
)
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


@pytest.mark.parametrize(
    ("state", "trigger"), [p for p in LEGAL if p[1] != "cancel"], ids=lambda v: v.value if isinstance(v, RunState) else v
)
def test_a_committed_run_keeps_every_other_legal_transition(state: RunState, trigger: str) -> None:
    assert next_state("r1", state, trigger, committed="publish") is LEGAL[(state, trigger)]


def test_a_cancel_the_table_refuses_anyway_is_not_reported_as_too_late() -> None:
    with pytest.raises(IllegalTransition) as err:
        next_state("r1", S.SUCCEEDED, "cancel", committed="publish")
    assert not isinstance(err.value, AlreadyCommitted)


# --- the machine answers the daemon's state questions ----------------------------------------


def _from(trigger: str) -> set[RunState]:
    return {s for (s, t) in LEGAL if t == trigger}


def test_the_named_sets_are_what_the_hand_written_table_says() -> None:
    """The supervisor and executor ask these instead of writing states out again."""
    assert machine.RESUMABLE == _from("requeue") == {S.INTERRUPTED, S.WAITING_RETRY, S.FAILED}
    assert machine.CANCELLABLE == _from("cancel") == set(CANCELLABLE)
    assert machine.DISPATCHABLE == _from("prepare") | _from("rolled_back") == {S.QUEUED, S.ROLLING_BACK}
    assert {S.RUNNING, S.VERIFYING} == machine.ROLLS_BACK_ON_FAILURE
    assert sources(Trigger.INTERRUPT) == _from("interrupt")


def test_the_triggers_are_an_enum_of_exactly_the_table_s_triggers() -> None:
    assert set(TRIGGERS) == set(Trigger) == {t for (_s, t) in LEGAL}
    assert all(isinstance(t, Trigger) for t in TRIGGERS)


def _event_classes(cls: type[ev.Event] = ev.Event) -> list[type[ev.Event]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_event_classes(sub)]
    return found


def test_each_trigger_is_named_by_exactly_one_event_class() -> None:
    """So the fold of the events is the run's state: no trigger without an event that records
    it, and no two events that mean the same move."""
    named = Counter(cls.trigger for cls in _event_classes() if cls.trigger is not None)
    assert named == Counter(set(Trigger)), named
    decodable = {*ev.EVENT_TYPES.values(), *COMMAND_TYPES.values()}  # the run streams' and the requests'
    assert all(cls in decodable for cls in _event_classes()), "an event the log cannot decode"


def test_the_markup_export_is_the_table() -> None:
    exported = {(RunState(t["source"]), t["trigger"]): RunState(t["dest"]) for t in markup()["transitions"]}
    assert exported == LEGAL
    assert markup()["initial"] == "queued"
    assert {s["name"] for s in markup()["states"] if s.get("final")} == {s.value for s in TERMINAL}

"""What follows a failure of a run's work, as a table: (state it failed in, retryable, attempt,
reversible work) -> the trigger recorded. Written out by hand from the executor's behaviour
(tests/unit/test_executor_rollback.py drives the same cases through real runs)."""

from __future__ import annotations

import pytest

from davit.domain.failures import after_failure
from davit.domain.machine import ACTIVE, RunState, Trigger, allowed

S, T = RunState, Trigger
MAX = 3

CASES: list[tuple[RunState, bool, int, bool, Trigger]] = [
    # state          retryable attempt reversible -> then
    (S.QUEUED, False, 1, False, T.FAIL),
    (S.PREPARING, True, 1, False, T.WAIT_RETRY),
    (S.PREPARING, True, 3, False, T.FAIL),  # no attempt left
    (S.PREPARING, False, 1, True, T.FAIL),  # nothing to put back before work starts
    (S.RUNNING, True, 2, False, T.WAIT_RETRY),
    (S.RUNNING, True, 2, True, T.WAIT_RETRY),  # a retry comes before a rollback
    (S.RUNNING, True, 3, True, T.ROLL_BACK),  # ... until the attempts are used up
    (S.RUNNING, False, 1, True, T.ROLL_BACK),
    (S.RUNNING, False, 1, False, T.FAIL),
    (S.VERIFYING, False, 1, True, T.ROLL_BACK),
    (S.VERIFYING, True, 1, False, T.WAIT_RETRY),
    (S.VERIFYING, False, 5, False, T.FAIL),
    (S.ROLLING_BACK, True, 1, True, T.FAIL),  # a failed rollback ends the run, never retried
    (S.ROLLING_BACK, False, 3, True, T.FAIL),
]


@pytest.mark.parametrize(
    ("state", "retryable", "attempt", "reversible", "then"),
    CASES,
    ids=lambda v: v.value if isinstance(v, (RunState, Trigger)) else str(v),
)
def test_what_follows_a_failure(state: RunState, retryable: bool, attempt: int, reversible: bool, then: Trigger) -> None:
    assert after_failure(state, retryable=retryable, attempt=attempt, max_attempts=MAX, reversible=reversible) is then


@pytest.mark.parametrize("state", sorted(ACTIVE), ids=lambda s: s.value)
@pytest.mark.parametrize("retryable", [True, False])
@pytest.mark.parametrize("reversible", [True, False])
def test_the_decision_is_always_a_move_the_machine_allows(state: RunState, retryable: bool, reversible: bool) -> None:
    """From every state in which the executor runs the work, the decided trigger is legal there."""
    for attempt in (1, MAX):
        then = after_failure(state, retryable=retryable, attempt=attempt, max_attempts=MAX, reversible=reversible)
        assert allowed(state, then), (state, then)


@pytest.mark.parametrize("state", [S.RUNNING, S.VERIFYING], ids=lambda s: s.value)
def test_a_run_whose_committing_step_started_is_retried_or_fails_but_never_rolls_back(state: RunState) -> None:
    """A migration's `finalize` removes the source: rolling back then would remove the target too."""
    decide = dict(max_attempts=MAX, reversible=True, committed=True)
    assert after_failure(state, retryable=False, attempt=1, **decide) is T.FAIL
    assert after_failure(state, retryable=True, attempt=MAX, **decide) is T.FAIL
    assert after_failure(state, retryable=True, attempt=1, **decide) is T.WAIT_RETRY

"""What follows a failure of a run's work: wait and retry, roll back, or fail.

A pure decision, kept apart from the executor that records it, so the policy reads (and is
tested) as a table: a rollback that fails ends the run failed; a retryable error is retried
while attempts are left; otherwise a run whose work can be put back and failed where the
machine lets it roll back does so (if the work says it changed something, which only the
work can tell); everything else fails. A run whose committing step has started (a migration's
`finalize`, which removes the source) is never rolled back: the rollback would remove the target,
by then the only copy; it is retried while attempts are left, then fails, and resumes from there.
"""

from __future__ import annotations

from davit.domain.machine import ROLLS_BACK_ON_FAILURE, RunState, Trigger


def after_failure(
    state: RunState, *, retryable: bool, attempt: int, max_attempts: int, reversible: bool, committed: bool = False
) -> Trigger:
    """The trigger to record after the run's work failed in `state` on its `attempt`-th try.

    `Trigger.ROLL_BACK` means: roll back if the work changed something, else `Trigger.FAIL`
    (asking the work is I/O, which the caller does)."""
    if state is RunState.ROLLING_BACK:
        return Trigger.FAIL
    if retryable and attempt < max_attempts:
        return Trigger.WAIT_RETRY
    if reversible and not committed and state in ROLLS_BACK_ON_FAILURE:
        return Trigger.ROLL_BACK
    return Trigger.FAIL

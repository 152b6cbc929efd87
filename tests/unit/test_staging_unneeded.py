"""Which ended runs' staging davitd removes: none that an operator could still resume from."""

from __future__ import annotations

from davit.domain.machine import RunState
from davit.domain.runs import RunView, staging_unneeded


def run(run_id: str, state: RunState, queued_at: str, job: str = "etc") -> RunView:
    return RunView(run_id=run_id, job=job, state=state, queued_at=queued_at)


def test_ended_runs_other_than_failed_need_no_staging() -> None:
    views = [
        run("ok", RunState.SUCCEEDED, "1"),
        run("cancel", RunState.CANCELLED, "2"),
        run("back", RunState.ROLLED_BACK, "3"),
        run("live", RunState.RUNNING, "4"),
        run("wait", RunState.WAITING_RETRY, "5"),
        run("cut", RunState.INTERRUPTED, "6"),
    ]
    assert staging_unneeded(views) == {"ok", "cancel", "back"}


def test_a_failed_run_keeps_its_staging_until_a_later_run_of_its_job_succeeds() -> None:
    failed = run("failed", RunState.FAILED, "2026-01-01T00:00:02")
    assert staging_unneeded([run("older", RunState.SUCCEEDED, "2026-01-01T00:00:01"), failed]) == {"older"}
    other_job = run("other", RunState.SUCCEEDED, "2026-01-01T00:00:03", job="db")
    assert "failed" not in staging_unneeded([failed, other_job])
    later = run("later", RunState.SUCCEEDED, "2026-01-01T00:00:03")
    assert staging_unneeded([failed, later]) == {"failed", "later"}

"""`davit status`'s verdict (davit/domain/health.py), with the clock passed in: each situation a
monitor must tell apart, and the exit code it gets (Nagios: 0 OK, 1 WARNING, 2 CRITICAL)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from davit.domain import events as ev
from davit.domain.health import DaemonFacts, Finding, Heartbeat, JobFacts, Status, assess, report_json, span
from davit.domain.runs import RunView, fold

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_positions = itertools.count(1)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def run(run_id: str, job: str, hours_ago: float, *events: ev.Event) -> RunView:
    """A run of `job` queued `hours_ago`, its events a minute apart."""
    start = NOW - timedelta(hours=hours_ago)
    queued = ev.RunQueued(run_id=run_id, job=job, kind="files.backup", revision="r", spec={}, reason="schedule")
    items = [
        ev.StoredEvent(
            position=next(_positions),
            stream=f"run-{run_id}",
            version=i + 1,
            event_id=f"{run_id}-{i}",
            type=e.type_name(),
            schema=1,
            data=e.model_dump(mode="json"),
            recorded_at=(start + timedelta(minutes=i)).isoformat(),
        )
        for i, e in enumerate([queued, *events])
    ]
    return fold(run_id, items)


def succeeded(run_id: str, job: str, hours_ago: float) -> RunView:
    return run(run_id, job, hours_ago, ev.RunPreparing(), ev.RunStarted(plan=["scan"]), ev.RunVerifying(), ev.RunSucceeded())


def failed(run_id: str, job: str, hours_ago: float, error: str = "source /srv cannot be read") -> RunView:
    return run(run_id, job, hours_ago, ev.RunPreparing(), ev.RunFailed(error=error, error_type="SourceMissing"))


def waiting_retry(run_id: str, job: str, hours_ago: float) -> RunView:
    wait = ev.RunWaitingRetry(error="mongo did not answer", error_type="MongoUnreachable", attempt=2, retry_at=at(-0.1))
    return run(run_id, job, hours_ago, ev.RunPreparing(attempt=2), wait)


def job(name: str, defined_hours_ago: float = 100, **spec: Any) -> JobFacts:
    return JobFacts(name, "files.backup", {"name": name, **spec}, at(defined_hours_ago))


def alive(log_problem: str | None = None, age: float = 2.0) -> DaemonFacts:
    beat = Heartbeat(
        pid=42, version="1.0", started_at=at(5), beat_at=at(0), interval_seconds=10, age_seconds=age, log_problem=log_problem
    )
    return DaemonFacts(lock_held=True, heartbeat=beat)


def test_all_good_is_ok_with_a_one_line_summary_first() -> None:
    report = assess(NOW, alive(), [job("docs", max_age="26h")], [succeeded("a", "docs", 3)])
    assert report.status is Status.OK
    assert report.summary.startswith("DAVIT OK - 1 jobs, 0 running, 0 queued; davitd up (pid 42, 1.0) | jobs=1 ")
    [docs] = report.jobs
    assert docs.last_run is not None and docs.last_run.run_id == "a"
    assert docs.last_success_age_seconds == pytest.approx(3 * 3600 - 4 * 60)  # (RunSucceeded: its fifth event, 4 min in)


def test_a_job_whose_last_run_failed_is_critical() -> None:
    report = assess(NOW, alive(), [job("docs"), job("mail")], [succeeded("a", "docs", 30), failed("b", "docs", 2)])
    assert report.status is Status.CRITICAL
    assert [(j.name, j.status) for j in report.jobs] == [("docs", Status.CRITICAL), ("mail", Status.OK)]
    assert report.summary.startswith("DAVIT CRITICAL - job docs: run b failed: source /srv cannot be read; 2 jobs")


def test_a_success_after_a_failure_recovers_the_job() -> None:
    report = assess(NOW, alive(), [job("docs")], [failed("a", "docs", 30), succeeded("b", "docs", 2)])
    assert report.status is Status.OK


def test_a_failed_attempt_with_a_retry_pending_is_a_warning() -> None:
    report = assess(NOW, alive(), [job("db")], [succeeded("a", "db", 20), waiting_retry("b", "db", 1)])
    assert report.status is Status.WARNING
    assert "run b failed attempt 2 (mongo did not answer); retry at" in report.findings[0].reason
    assert report_json(report, NOW)["jobs"][0]["retry_at"] == at(-0.1)


def test_a_job_without_success_within_its_max_age_is_stale_a_warning() -> None:
    report = assess(NOW, alive(), [job("docs", max_age="26h")], [succeeded("a", "docs", 30)])
    assert report.status is Status.WARNING
    assert report.jobs[0].stale
    assert report.findings[0].reason == "stale: last success 1d5h ago (max_age 26h)"


def test_a_job_never_succeeded_is_stale_once_its_max_age_has_passed_since_its_definition() -> None:
    young = assess(NOW, alive(), [job("docs", defined_hours_ago=2, max_age="1d")], [])
    old = assess(NOW, alive(), [job("docs", defined_hours_ago=30, max_age="1d")], [])
    assert (young.status, old.status) == (Status.OK, Status.WARNING)
    assert old.findings[0].reason == "stale: no successful run in the 1d6h since it was defined (max_age 1d)"


def test_a_job_without_max_age_is_never_stale() -> None:
    report = assess(NOW, alive(), [job("docs")], [succeeded("a", "docs", 24 * 365)])
    assert report.status is Status.OK and not report.jobs[0].stale


def test_a_run_in_progress_leaves_the_previous_result_standing() -> None:
    running = run("c", "docs", 0.1, ev.RunPreparing(), ev.RunStarted(plan=["scan"]), ev.StepStarted(step="scan"))
    report = assess(NOW, alive(), [job("docs")], [failed("b", "docs", 2), running])
    assert report.status is Status.CRITICAL  # until a run succeeds
    assert report.jobs[0].current_run is running and [v.run_id for v in report.running] == ["c"]
    assert report_json(report, NOW)["running"][0]["step"] == "scan"


def test_a_cancelled_run_is_no_result() -> None:
    cancelled = run("c", "docs", 1, ev.RunCancelling(), ev.RunCancelled())
    report = assess(NOW, alive(), [job("docs")], [succeeded("a", "docs", 3), cancelled])
    assert report.status is Status.OK and report.jobs[0].last_run is not None and report.jobs[0].last_run.run_id == "a"


def test_davitd_not_holding_its_lock_is_critical_whatever_its_heartbeat_says() -> None:
    report = assess(NOW, DaemonFacts(lock_held=False, heartbeat=alive().heartbeat), [job("docs")], [])
    assert report.status is Status.CRITICAL and report.daemon_state == "not_running"
    assert report.summary.startswith("DAVIT CRITICAL - davitd is not running (it does not hold its lock); 1 jobs")


def test_davitd_holding_its_lock_with_a_stale_heartbeat_is_not_responding() -> None:
    fresh = assess(NOW, alive(age=29), [], [])
    stale = assess(NOW, alive(age=31), [], [])
    assert (fresh.status, stale.status) == (Status.OK, Status.CRITICAL)
    assert stale.daemon_state == "not_responding"
    assert "its last heartbeat is 31s old" in stale.findings[0].reason


def test_davitd_holding_its_lock_without_a_readable_heartbeat_is_not_responding() -> None:
    daemon = DaemonFacts(lock_held=True, heartbeat=None, heartbeat_problem="state/davitd.heartbeat: a FIFO")
    report = assess(NOW, daemon, [], [])
    assert report.status is Status.CRITICAL and "a FIFO" in report.findings[0].reason


def test_a_log_davitd_cannot_write_is_critical() -> None:
    report = assess(NOW, alive(log_problem="event log cannot be written: no space left"), [], [])
    assert report.status is Status.CRITICAL
    assert report.findings[0].reason == "davitd: event log cannot be written: no space left"


def test_findings_of_the_gatherer_count_and_the_worst_come_first() -> None:
    extra = [Finding(Status.CRITICAL, "the event log cannot be read: not a database")]
    report = assess(NOW, alive(), [job("docs", max_age="1h")], [succeeded("a", "docs", 3)], extra=extra)
    assert [f.status for f in report.findings] == [Status.CRITICAL, Status.WARNING]
    assert report.summary.startswith("DAVIT CRITICAL - the event log cannot be read: not a database; job docs: stale")


def test_next_fire_is_the_schedulers_from_the_last_scheduled_fire() -> None:
    docs = JobFacts("docs", "files.backup", {"schedule": "0 3 * * *"}, at(100), last_scheduled_for="2026-03-10T03:00:00+00:00")
    report = assess(NOW, alive(), [docs], [])
    assert report.jobs[0].next_fire == "2026-03-11T03:00:00+00:00"


def test_a_missed_fire_shows_as_due_in_the_past() -> None:
    docs = JobFacts("docs", "files.backup", {"schedule": "0 3 * * *"}, at(100), last_scheduled_for="2026-03-07T03:00:00+00:00")
    assert assess(NOW, alive(), [docs], []).jobs[0].next_fire == "2026-03-08T03:00:00+00:00"


def test_queue_counts_queued_and_retrying_runs_and_pending_requests() -> None:
    queued = run("q", "mail", 0.01)
    report = assess(NOW, alive(), [job("db"), job("mail")], [waiting_retry("w", "db", 1), queued], requests_pending=3)
    body = report_json(report, NOW)
    assert body["queue"] == {"queued": ["q"], "waiting_retry": ["w"], "requests_pending": 3}
    assert body["status"] == "WARNING" and body["exit_code"] == 1 and body["format"] == 1


def test_the_json_holds_every_documented_key() -> None:
    body = report_json(assess(NOW, alive(), [job("docs")], [succeeded("a", "docs", 3)]), NOW)
    assert set(body) == {
        "format",
        "status",
        "exit_code",
        "summary",
        "checked_at",
        "daemon",
        "queue",
        "running",
        "jobs",
        "findings",
    }
    assert set(body["daemon"]) == {
        "state",
        "lock_held",
        "pid",
        "version",
        "started_at",
        "heartbeat_at",
        "heartbeat_age_seconds",
        "log_problem",
    }
    assert set(body["jobs"][0]) == {
        "name",
        "kind",
        "status",
        "schedule",
        "max_age_seconds",
        "stale",
        "last_run",
        "last_state",
        "last_finished_at",
        "last_error",
        "last_attempt",
        "retry_at",
        "last_success_at",
        "last_success_age_seconds",
        "current_run",
        "current_state",
        "next_fire",
    }


@pytest.mark.parametrize(
    ("seconds", "said"), [(0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"), (93600, "1d2h")], ids=str
)
def test_ages_read_the_way_people_say_them(seconds: float, said: str) -> None:
    assert span(seconds) == said

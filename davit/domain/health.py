"""`davit status`'s verdict: is davit doing its job, as a monitor asks it, from facts passed in.

Pure: the CLI gathers the facts (the daemon's lock and heartbeat, the jobs and runs folded from
the event log, the clock's `now`) and this module decides. Codes follow the Nagios plugin
convention that Icinga, Zabbix agents and cron wrappers read: 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN; the worst finding decides. Per job, the result that counts is its latest *settled*
run (ended, or waiting for a retry; a cancelled run is an operator's choice, not a result; a
run still in progress has no result yet, so the one before it counts):

- WARNING: a run failed and waits for a retry; the last success (or, never run, the
  definition) is older than the job's `max_age` (stale).
- CRITICAL: the latest settled run failed (its retries spent) or was rolled back by a failure;
  davitd is not running, or holds its lock but its heartbeat stopped; davitd reports that it
  cannot write the log. (The CLI adds: the log cannot be read.)
- UNKNOWN is the CLI's: the facts could not be gathered (a bad config file).

The first line is the plugin's one-line summary (`DAVIT OK - 3 jobs, ...`), with performance
data after `|`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from davit.domain.durations import parse_duration
from davit.domain.machine import TERMINAL, RunState
from davit.domain.runs import RunView
from davit.domain.schedule import Timetable

# davitd rewrites its heartbeat this often; a heartbeat older than HEARTBEAT_STALE_BEATS of its
# own interval means the daemon stopped beating (hung, or its state directory cannot be written)
HEARTBEAT_STALE_BEATS = 3
IN_PROGRESS = frozenset(RunState) - TERMINAL - {RunState.WAITING_RETRY}
RUNNING = frozenset({RunState.PREPARING, RunState.RUNNING, RunState.VERIFYING, RunState.CANCELLING, RunState.ROLLING_BACK})


class Status(IntEnum):
    """The Nagios plugin codes, worst last."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Heartbeat:
    """What davitd last wrote about itself (`davit/daemon/heartbeat.py`), with its age as the
    reader measured it."""

    pid: int
    version: str
    started_at: str
    beat_at: str
    interval_seconds: float
    age_seconds: float
    log_problem: str | None = None


@dataclass(frozen=True)
class DaemonFacts:
    lock_held: bool
    heartbeat: Heartbeat | None
    heartbeat_problem: str | None = None  # why the heartbeat could not be read, if it could not


@dataclass(frozen=True)
class JobFacts:
    """An active job as the registry folds it from the log."""

    name: str
    kind: str
    spec: dict[str, Any]
    defined_at: str
    last_scheduled_for: str | None = None


@dataclass(frozen=True)
class Finding:
    status: Status
    reason: str
    job: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.name, "job": self.job, "reason": self.reason}


@dataclass
class JobHealth:
    name: str
    kind: str
    schedule: str | None
    max_age_seconds: int | None
    status: Status = Status.OK
    last_run: RunView | None = None  # latest settled run
    current_run: RunView | None = None  # a run in progress, if any
    last_success_at: str | None = None
    last_success_age_seconds: float | None = None
    next_fire: str | None = None
    stale: bool = False

    def to_json(self) -> dict[str, Any]:
        last = self.last_run
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status.name,
            "schedule": self.schedule,
            "max_age_seconds": self.max_age_seconds,
            "stale": self.stale,
            "last_run": last.run_id if last else None,
            "last_state": last.state.value if last else None,
            "last_finished_at": last.finished_at if last else None,
            "last_error": last.error if last and last.state is not RunState.SUCCEEDED else None,
            "last_attempt": last.attempt if last else None,
            "retry_at": last.retry_at if last and last.state is RunState.WAITING_RETRY else None,
            "last_success_at": self.last_success_at,
            "last_success_age_seconds": _round(self.last_success_age_seconds),
            "current_run": self.current_run.run_id if self.current_run else None,
            "current_state": self.current_run.state.value if self.current_run else None,
            "next_fire": self.next_fire,
        }


@dataclass
class Report:
    status: Status
    summary: str
    daemon: DaemonFacts
    daemon_state: str  # running | not_running | not_responding
    jobs: list[JobHealth]
    running: list[RunView]
    queued: list[RunView]
    waiting_retry: list[RunView]
    requests_pending: int
    findings: list[Finding] = field(default_factory=list)


def assess(
    now: datetime,
    daemon: DaemonFacts,
    jobs: Iterable[JobFacts],
    runs: Iterable[RunView],
    requests_pending: int = 0,
    extra: Iterable[Finding] = (),
) -> Report:
    """The verdict on davit at `now` (an aware datetime in the zone cron times are read in);
    `extra`: findings the gatherer made (the log cannot be read, a run that does not fold)."""
    runs = sorted(runs, key=lambda v: v.last_position)
    by_job: dict[str, list[RunView]] = {}
    for view in sorted(runs, key=_queue_order):
        by_job.setdefault(view.job, []).append(view)
    findings: list[Finding] = list(extra)
    daemon_state = _judge_daemon(daemon, findings)
    healths = [_judge_job(now, job, by_job.get(job.name, []), findings) for job in sorted(jobs, key=lambda j: j.name)]
    report = Report(
        status=max((f.status for f in findings), default=Status.OK),
        summary="",
        daemon=daemon,
        daemon_state=daemon_state,
        jobs=healths,
        running=[v for v in runs if v.state in RUNNING],
        queued=[v for v in runs if v.state in {RunState.QUEUED, RunState.INTERRUPTED}],
        waiting_retry=[v for v in runs if v.state is RunState.WAITING_RETRY],
        requests_pending=requests_pending,
        findings=sorted(findings, key=lambda f: (-f.status, f.job or "", f.reason)),
    )
    report.summary = summary_line(report)
    return report


def _judge_daemon(daemon: DaemonFacts, findings: list[Finding]) -> str:
    beat = daemon.heartbeat
    if not daemon.lock_held:
        findings.append(Finding(Status.CRITICAL, "davitd is not running (it does not hold its lock)"))
        return "not_running"
    if beat is None:
        why = daemon.heartbeat_problem or "no heartbeat"
        findings.append(Finding(Status.CRITICAL, f"davitd holds its lock but its heartbeat cannot be read: {why}"))
        return "not_responding"
    if beat.age_seconds > HEARTBEAT_STALE_BEATS * beat.interval_seconds:
        findings.append(
            Finding(
                Status.CRITICAL,
                f"davitd (pid {beat.pid}) holds its lock but its last heartbeat is {span(beat.age_seconds)} old "
                "(hung, or its state directory cannot be written)",
            )
        )
        return "not_responding"
    if beat.log_problem:
        findings.append(Finding(Status.CRITICAL, f"davitd: {beat.log_problem}"))
    return "running"


def _judge_job(now: datetime, job: JobFacts, runs: Sequence[RunView], findings: list[Finding]) -> JobHealth:
    """`runs`: the job's runs, oldest queued first."""
    max_age = job.spec.get("max_age")
    health = JobHealth(job.name, job.kind, job.spec.get("schedule"), _seconds(max_age))
    current = [v for v in runs if v.state in IN_PROGRESS]
    settled = [v for v in runs if v.state not in IN_PROGRESS and not v.cancelled]
    health.current_run = current[-1] if current else None
    health.last_run = settled[-1] if settled else None
    successes = [v for v in runs if v.state is RunState.SUCCEEDED and v.finished_at]
    if successes:
        health.last_success_at = max(v.finished_at or "" for v in successes)
        health.last_success_age_seconds = _age(now, health.last_success_at)
    own: list[Finding] = []
    _judge_last_run(job.name, health.last_run, own)
    _judge_staleness(now, job, health, own)
    health.next_fire = _next_fire(now, job)
    health.status = max((f.status for f in own), default=Status.OK)
    findings.extend(own)
    return health


def _judge_last_run(name: str, last: RunView | None, findings: list[Finding]) -> None:
    if last is None or last.state is RunState.SUCCEEDED:
        return
    error = last.error or last.state.value
    if last.state is RunState.WAITING_RETRY:
        reason = f"run {last.run_id} failed attempt {last.attempt} ({error}); retry at {last.retry_at}"
        findings.append(Finding(Status.WARNING, reason, name))
    else:  # failed, or rolled back by a failure (a cancel's rollback is not a result)
        findings.append(Finding(Status.CRITICAL, f"run {last.run_id} {last.state.value}: {error}", name))


def _judge_staleness(now: datetime, job: JobFacts, health: JobHealth, findings: list[Finding]) -> None:
    if health.max_age_seconds is None:
        return
    limit = f"max_age {job.spec.get('max_age')}"
    if health.last_success_age_seconds is not None:
        if health.last_success_age_seconds > health.max_age_seconds:
            health.stale = True
            reason = f"stale: last success {span(health.last_success_age_seconds)} ago ({limit})"
            findings.append(Finding(Status.WARNING, reason, job.name))
        return
    defined = _age(now, job.defined_at)
    if defined is not None and defined > health.max_age_seconds:
        health.stale = True
        reason = f"stale: no successful run in the {span(defined)} since it was defined ({limit})"
        findings.append(Finding(Status.WARNING, reason, job.name))


def _next_fire(now: datetime, job: JobFacts) -> str | None:
    """The next fire as davitd's scheduler plans it (`Timetable.plan`, from the job's last
    scheduled fire or its definition). A time in the past means: due now (davitd was down)."""
    schedule = job.spec.get("schedule")
    since = job.last_scheduled_for or job.defined_at
    if not schedule or not since:
        return None
    table = Timetable()
    try:
        table.plan(job.name, schedule, datetime.fromisoformat(since), now)
    except ValueError:
        return None
    plan = table.plan_of(job.name)
    return plan.due.isoformat(timespec="seconds") if plan else None


def summary_line(report: Report) -> str:
    """`DAVIT OK - 3 jobs, 1 running, 0 queued, davitd up (pid 42) | jobs=3;...`: the worst
    findings first (at most three), then counts."""
    counts = {
        "jobs": len(report.jobs),
        "running": len(report.running),
        "queued": len(report.queued),
        "waiting_retry": len(report.waiting_retry),
        "failed": sum(1 for j in report.jobs if j.last_run is not None and j.status is Status.CRITICAL),
        "stale": sum(1 for j in report.jobs if j.stale),
    }
    worst = [_finding_text(f) for f in report.findings[:3]]
    more = len(report.findings) - len(worst)
    if more > 0:
        worst.append(f"{more} more")
    beat = report.daemon.heartbeat
    daemon = f"davitd up (pid {beat.pid}, {beat.version})" if report.daemon_state == "running" and beat else ""
    parts = [*worst, f"{counts['jobs']} jobs, {counts['running']} running, {counts['queued']} queued"]
    if daemon:
        parts.append(daemon)
    perf = " ".join(f"{k}={v}" for k, v in counts.items())
    return f"DAVIT {report.status.name} - {'; '.join(parts)} | {perf}"


def _finding_text(finding: Finding) -> str:
    return f"job {finding.job}: {finding.reason}" if finding.job else finding.reason


def report_json(report: Report, now: datetime) -> dict[str, Any]:
    """The stable `--json` shape (documented in the README, "Status and monitoring")."""
    beat = report.daemon.heartbeat
    return {
        "format": 1,
        "status": report.status.name,
        "exit_code": int(report.status),
        "summary": report.summary,
        "checked_at": now.isoformat(timespec="seconds"),
        "daemon": {
            "state": report.daemon_state,
            "lock_held": report.daemon.lock_held,
            "pid": beat.pid if beat else None,
            "version": beat.version if beat else None,
            "started_at": beat.started_at if beat else None,
            "heartbeat_at": beat.beat_at if beat else None,
            "heartbeat_age_seconds": _round(beat.age_seconds) if beat else None,
            "log_problem": beat.log_problem if beat else None,
        },
        "queue": {
            "queued": [v.run_id for v in report.queued],
            "waiting_retry": [v.run_id for v in report.waiting_retry],
            "requests_pending": report.requests_pending,
        },
        "running": [_running_json(v) for v in report.running],
        "jobs": [j.to_json() for j in report.jobs],
        "findings": [f.to_json() for f in report.findings],
    }


def current_step(view: RunView) -> str | None:
    running = [s.name for s in view.steps.values() if s.status == "running"]
    return running[-1] if running else None


def _running_json(view: RunView) -> dict[str, Any]:
    return {
        "run_id": view.run_id,
        "job": view.job,
        "kind": view.kind,
        "state": view.state.value,
        "attempt": view.attempt,
        "step": current_step(view),
        "started_at": view.started_at,
        "bytes_done": view.bytes_done,
        "items_done": view.items_done,
        "checkpoints": view.checkpoints,
    }


def span(seconds: float) -> str:
    """`seconds` the way people say an age: `45s`, `12m`, `3h20m`, `2d4h`."""
    left = int(max(seconds, 0))
    if left < 60:
        return f"{left}s"
    if left < 3600:
        return f"{left // 60}m"
    if left < 86400:
        return f"{left // 3600}h{left % 3600 // 60:02d}m"
    return f"{left // 86400}d{left % 86400 // 3600}h"


def _queue_order(view: RunView) -> tuple[str, int]:
    return (view.queued_at or "", view.last_position)


def _age(now: datetime, at: str | None) -> float | None:
    if not at:
        return None
    try:
        return (now - datetime.fromisoformat(at)).total_seconds()
    except (ValueError, TypeError):
        return None


def _seconds(max_age: object) -> int | None:
    if not isinstance(max_age, str):
        return None
    try:
        return parse_duration(max_age)
    except ValueError:
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

"""`davit status [--json]`: is davit doing its job, answered for a person and for a monitor.

Gathers the facts (davitd's lock and heartbeat from `davit/daemon/heartbeat.py`; the active
jobs, every run and the requests davitd has not handled yet, folded from the event log, read
only) and prints the verdict of `davit/domain/health.py`: a Nagios plugin's one-line summary
first, then the daemon, the queue, the running runs, the jobs and the findings. The exit status
is the plugin code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. A log that cannot be read is
CRITICAL (nothing can be told about the jobs, and davitd cannot be working from it); a config
that cannot be loaded, or any other failure to gather the facts, is UNKNOWN.

Everything printed that came from a job file, an error or the log is escaped for the terminal
(`davit/daemon/cli/safetext.py`); `--json` output is JSON-escaped (ASCII only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import anyio
import click

from davit.daemon.cli.common import emit_json, human_bytes, say, state, table
from davit.daemon.config import Settings
from davit.daemon.eventlogs import open_for_cli
from davit.daemon.heartbeat import daemon_facts
from davit.daemon.jobs import JobRegistry
from davit.domain import events as ev
from davit.domain.errors import DavitError, HealthNotOk, IllegalTransition
from davit.domain.health import (
    DaemonFacts,
    Finding,
    JobFacts,
    Report,
    Status,
    assess,
    current_step,
    report_json,
    span,
)
from davit.domain.ports import LogReader
from davit.domain.runs import RunView, fold
from davit.eventstore.sqlite import EventLogMissing

MAX_PENDING_COUNTED = 10_000  # requests davitd has not handled, counted up to this many


@dataclass
class LogFacts:
    jobs: list[JobFacts]
    runs: list[RunView]
    requests_pending: int
    ignored: list[Finding]


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (stable, see the README).")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Say whether davitd runs and each job is healthy; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    now = datetime.now().astimezone()  # cron times are read in the local zone, as davitd reads them
    try:
        settings = state(ctx).settings
    except DavitError as exc:
        _unknown(now, f"the configuration cannot be loaded: {exc}", as_json)
    try:
        daemon = daemon_facts(settings.state_dir, settings.lock_path, now)
    except Exception as exc:  # a monitor must get a code, not a traceback
        _unknown(now, f"davitd's state cannot be read: {type(exc).__name__}: {exc}", as_json)
    try:
        facts = anyio.run(_read_log, settings)
    except EventLogMissing as exc:
        _log_unreadable(now, daemon, str(exc), as_json)
    except (DavitError, OSError) as exc:
        _log_unreadable(now, daemon, f"the event log cannot be read: {exc}", as_json)
    except Exception as exc:
        _log_unreadable(now, daemon, f"the event log cannot be read: {type(exc).__name__}: {exc}", as_json)
    report = assess(now, daemon, facts.jobs, facts.runs, facts.requests_pending, facts.ignored)
    if as_json:
        emit_json(report_json(report, now) | {"log_readable": True})
    else:
        _print(report, now)
    if report.status is not Status.OK:
        raise HealthNotOk(int(report.status), report.summary)


async def _read_log(settings: Settings) -> LogFacts:
    store = await open_for_cli(settings, write=False)  # (SQLite or PostgreSQL: davit/daemon/eventlogs.py)
    try:
        registry = JobRegistry(store)
        await registry.load()
        jobs = [
            JobFacts(j.name, j.kind, j.spec, j.defined_at, j.last_scheduled_for) for j in registry.jobs.values() if not j.retired
        ]
        runs, ignored = await _load_runs(store)
        return LogFacts(jobs, runs, await _requests_pending(store), ignored)
    finally:
        await store.close()


async def _load_runs(store: LogReader) -> tuple[list[RunView], list[Finding]]:
    """Every run folded; a run whose events do not form a legal run (written by something
    else than davit) is left out with a warning, as davitd leaves it alone."""
    streams: dict[str, list[ev.StoredEvent]] = {}
    async for stored in store.iter_all(stream_prefix="run-"):
        streams.setdefault(stored.stream, []).append(stored)
    views, ignored = [], []
    for stream, items in streams.items():
        run_id = stream.removeprefix("run-")
        try:
            views.append(fold(run_id, items))
        except IllegalTransition as exc:
            ignored.append(Finding(Status.WARNING, f"run {run_id} is ignored: its events do not form a legal run ({exc})"))
    return views, ignored


async def _requests_pending(store: LogReader) -> int:
    """Requests (`davit run`, `resume`, `cancel`) recorded after the last one davitd handled."""
    handled = 0
    async for stored in store.iter_all(stream_prefix=ev.DAEMON_STREAM):
        if stored.stream == ev.DAEMON_STREAM and stored.type == ev.RequestsHandled.type_name():
            handled = max(handled, int(stored.data.get("upto_position", 0)))
    page = await store.read_all(handled, MAX_PENDING_COUNTED, ev.REQUESTS_STREAM)
    return sum(1 for stored in page if stored.stream == ev.REQUESTS_STREAM)


# --- when the facts cannot be had --------------------------------------------------------------


def _unknown(now: datetime, reason: str, as_json: bool) -> NoReturn:
    summary = f"DAVIT UNKNOWN - {reason}"
    if as_json:
        emit_json({"format": 1, "status": "UNKNOWN", "exit_code": 3, "summary": summary, "checked_at": _iso(now)})
    else:
        say(summary)
    raise HealthNotOk(int(Status.UNKNOWN), summary)


def _log_unreadable(now: datetime, daemon: DaemonFacts, reason: str, as_json: bool) -> NoReturn:
    """CRITICAL, with what is known of the daemon (its lock and heartbeat need no log)."""
    report = assess(now, daemon, [], [], 0, [Finding(Status.CRITICAL, reason)])
    if as_json:
        emit_json(report_json(report, now) | {"log_readable": False})
    else:
        _print(report, now)
    raise HealthNotOk(int(report.status), report.summary)


# --- the text --------------------------------------------------------------------------------


def _print(report: Report, now: datetime) -> None:
    say(report.summary)
    say(_daemon_line(report))
    click.echo(
        f"queue: {len(report.queued)} queued, {len(report.waiting_retry)} waiting for a retry, "
        f"{report.requests_pending} requests not yet handled"
    )
    if report.running:
        click.echo("running:")
        table(
            (
                [v.run_id, v.job, v.state.value, current_step(v) or "-", v.attempt, human_bytes(v.bytes_done), v.items_done]
                for v in report.running
            ),
            ["run", "job", "state", "step", "try", "done", "items"],
        )
    if report.jobs:
        click.echo("jobs:")
        table(
            (
                [
                    j.name,
                    j.status.name,
                    j.last_run.state.value if j.last_run else "-",
                    _ago(j.last_success_age_seconds),
                    j.current_run.state.value if j.current_run else "-",
                    j.next_fire or "-",
                ]
                for j in report.jobs
            ),
            ["job", "status", "last result", "last success", "now", "next fire"],
        )
    for finding in report.findings:
        who = f"job {finding.job}: " if finding.job else ""
        say(f"{finding.status.name}: {who}{finding.reason}")


def _daemon_line(report: Report) -> str:
    beat = report.daemon.heartbeat
    if report.daemon_state == "running" and beat is not None:
        return (
            f"davitd: running, pid {beat.pid}, version {beat.version}, started {beat.started_at}, "
            f"heartbeat {span(beat.age_seconds)} ago"
        )
    if report.daemon_state == "not_responding":
        return "davitd: NOT RESPONDING (holds its lock, no fresh heartbeat)"
    return "davitd: NOT RUNNING"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{span(seconds)} ago"


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")

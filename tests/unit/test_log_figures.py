"""The metrics' figures are the fold of the log: runs by how they ended, retries, last success,
last run's bytes, a repository's snapshots; replaying the same log gives the same figures."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from davit.domain import events as ev
from davit.domain.logfigures import LogFigures

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


class Log:
    """A log as davitd writes it: positions, a version per stream, a clock a second per event."""

    def __init__(self) -> None:
        self.items: list[ev.StoredEvent] = []
        self.versions: dict[str, int] = defaultdict(int)

    def add(self, stream: str, *events: ev.Event) -> None:
        for event in events:
            self.versions[stream] += 1
            n = len(self.items) + 1
            self.items.append(
                ev.StoredEvent(
                    position=n,
                    stream=stream,
                    version=self.versions[stream],
                    event_id=f"e{n}",
                    type=event.type_name(),
                    schema=1,
                    data=event.model_dump(mode="json"),
                    recorded_at=(T0 + timedelta(seconds=n)).isoformat(),
                )
            )

    def at(self, position: int) -> float:
        return (T0 + timedelta(seconds=position)).timestamp()

    def define(self, name: str, **spec: Any) -> None:
        body = {"name": name, "kind": "files.backup", "repository": "local", **spec}
        self.add(f"job-{name}", ev.JobDefined(name=name, kind="files.backup", revision="r", file=f"{name}.toml", spec=body))

    def backup(self, run_id: str, job: str, *, bytes_done: int, stored: int, items: int, end: ev.Event | None = None) -> None:
        spec = {"name": job, "kind": "files.backup", "repository": "local"}
        self.add(
            f"run-{run_id}",
            ev.RunQueued(run_id=run_id, job=job, kind="files.backup", revision="r", spec=spec, reason="manual"),
            ev.RunPreparing(attempt=1),
            ev.RunStarted(plan=["store", "publish"]),
            ev.StepStarted(step="store"),
            ev.CheckpointRecorded(step="store", cursor={}, bytes_done=bytes_done // 2, bytes_stored=stored // 2, items_done=1),
            ev.CheckpointRecorded(step="store", cursor={}, bytes_done=bytes_done, bytes_stored=stored, items_done=items),
            ev.StepCompleted(step="store"),
            ev.StepStarted(step="publish", commits=True),
            ev.StepCompleted(step="publish"),
            ev.RunVerifying(),
            end or ev.RunSucceeded(snapshot_id=run_id, summary={"snapshot_id": run_id}),
        )

    def figures(self) -> LogFigures:
        figures = LogFigures()
        for item in self.items:
            figures.apply(item)
        return figures


def test_two_successful_backups_count_as_two_and_the_last_one_gives_its_figures() -> None:
    log = Log()
    log.define("home", max_age="26h")
    log.backup("r1", "home", bytes_done=1000, stored=400, items=10)
    log.backup("r2", "home", bytes_done=3000, stored=100, items=12)
    figures = log.figures()
    job = figures.jobs["home"]
    assert job.ended == {"succeeded": 2}
    assert job.max_age_seconds == 26 * 3600
    assert job.last_success_at == log.at(len(log.items))
    assert job.last_ended is not None
    assert (job.last_ended.run_id, job.last_ended.bytes_done, job.last_ended.bytes_stored, job.last_ended.items_done) == (
        "r2",
        3000,
        100,
        12,
    )
    # from its RunPreparing (the 13th event) to its RunSucceeded (the 22nd)
    assert job.last_ended.duration_seconds == 9.0
    repo = figures.repositories["local"]
    assert (repo.snapshots, repo.backup_read_bytes, repo.backup_stored_bytes, repo.size_bytes) == (2, 4000, 500, 500)
    assert repo.dedup_ratio == 8.0
    assert figures.events == len(log.items) and figures.position == len(log.items)
    assert not figures.runs  # both ended for good: nothing of them is kept but their ids


def test_a_run_that_retried_then_failed_counts_its_retries_and_its_failure() -> None:
    log = Log()
    log.define("db")
    spec = {"name": "db", "kind": "files.backup", "repository": "local"}
    log.add(
        "run-f1",
        ev.RunQueued(run_id="f1", job="db", kind="files.backup", revision="r", spec=spec, reason="schedule"),
        ev.RunPreparing(attempt=1),
        ev.RunWaitingRetry(error="peer busy", error_type="PeerBusy", attempt=1, retry_at=T0.isoformat()),
        ev.RunRequeued(reason="retry"),
        ev.RunPreparing(attempt=2),
        ev.RunInterrupted(reason="davitd stopped"),
        ev.RunRequeued(reason="resumed at start-up"),
        ev.RunPreparing(attempt=2),
        ev.RunFailed(error="source gone", error_type="SourceMissing"),
    )
    figures = log.figures()
    job = figures.jobs["db"]
    assert (job.retries, job.interruptions, dict(job.ended)) == (1, 1, {"failed": 1})
    assert job.last_failure_at == log.at(len(log.items)) and job.last_success_at is None
    assert figures.runs_by_state() == {}  # failed is an end, though an operator may resume it


def test_a_failed_run_resumed_by_an_operator_counts_again_when_it_succeeds() -> None:
    log = Log()
    log.define("home")
    log.backup("r1", "home", bytes_done=10, stored=10, items=1, end=ev.RunFailed(error="disk full", error_type="DiskFull"))
    log.add("run-r1", ev.RunRequeued(reason="resumed by operator"))
    assert log.figures().runs_by_state() == {"queued": 1}
    log.add(
        "run-r1",
        ev.RunPreparing(attempt=1),
        ev.RunStarted(plan=["publish"]),
        ev.RunVerifying(),
        ev.RunSucceeded(snapshot_id="r1"),
    )
    job = log.figures().jobs["home"]
    assert dict(job.ended) == {"failed": 1, "succeeded": 1}
    assert job.last_ended is not None and job.last_ended.state.value == "succeeded"


def test_a_retention_step_sets_the_snapshots_to_its_kept_list_and_adds_what_it_freed() -> None:
    log = Log()
    log.define("home", retention={"keep_last": 1})
    log.backup("r1", "home", bytes_done=100, stored=100, items=1)
    spec = {"name": "home", "kind": "files.backup", "repository": "local"}
    log.add(
        "run-r2",
        ev.RunQueued(run_id="r2", job="home", kind="files.backup", revision="r", spec=spec, reason="manual"),
        ev.RunPreparing(attempt=1),
        ev.RunStarted(plan=["store", "publish", "retention"]),
        ev.CheckpointRecorded(step="store", cursor={}, bytes_done=100, bytes_stored=30, items_done=1),
        ev.StepStarted(step="publish", commits=True),
        ev.StepCompleted(step="retention", summary={"kept": ["r2"], "forgotten": ["r1", "older"], "bytes_freed": 70}),
        ev.RunVerifying(),
        ev.RunSucceeded(snapshot_id="r2"),
    )
    repo = log.figures().repositories["local"]
    assert (repo.snapshots, repo.freed_bytes, repo.size_bytes) == (1, 70, 60)


def test_events_of_a_run_after_it_ended_make_no_second_run() -> None:
    log = Log()
    log.define("home")
    log.backup("r1", "home", bytes_done=10, stored=10, items=1)
    log.add("run-r1", ev.RunWarning(message="written by something else than davitd"))
    figures = log.figures()
    assert figures.runs_by_state() == {} and dict(figures.jobs["home"].ended) == {"succeeded": 1}


def test_a_run_whose_events_do_not_fold_is_left_out_and_the_others_are_counted() -> None:
    log = Log()
    log.define("home")
    spec = {"name": "home", "kind": "files.backup", "repository": "local"}
    log.add(
        "run-bad",
        ev.RunQueued(run_id="bad", job="home", kind="files.backup", revision="r", spec=spec, reason="manual"),
        ev.RunSucceeded(snapshot_id="bad"),  # never started: the machine refuses it
    )
    log.backup("r1", "home", bytes_done=10, stored=10, items=1)
    figures = log.figures()
    assert dict(figures.jobs["home"].ended) == {"succeeded": 1}
    assert "bad" not in figures.runs


def test_a_request_for_a_job_that_does_not_exist_makes_no_job_figure() -> None:
    log = Log()
    log.add(
        "run-x",
        ev.RunQueued(run_id="x", job='no"such\njob', kind="", revision="", spec={}, reason="manual"),
        ev.RunFailed(error="no job named ...", error_type="InvalidJob"),
    )
    assert log.figures().jobs == {}


def test_a_retired_job_is_marked_and_keeps_its_counts() -> None:
    log = Log()
    log.define("home")
    log.backup("r1", "home", bytes_done=10, stored=10, items=1)
    log.add("job-home", ev.JobRetired(name="home", file="home.toml", reason="file removed"))
    job = log.figures().jobs["home"]
    assert job.retired and dict(job.ended) == {"succeeded": 1}


def test_feeding_the_log_in_pages_gives_the_same_figures_as_in_one_pass() -> None:
    log = Log()
    log.define("home")
    for i in range(3):
        log.backup(f"r{i}", "home", bytes_done=10 * i, stored=i, items=i)
    whole = log.figures()
    paged = LogFigures()
    for start in range(0, len(log.items), 7):
        for item in log.items[start : start + 7]:
            paged.apply(item)
    assert paged.jobs == whole.jobs and paged.repositories == whole.repositories

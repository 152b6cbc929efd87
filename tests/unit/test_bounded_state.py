"""davitd folds every event of a log that grows for years into its metrics' figures and its
notifications' outbox: a year of hourly runs, failures among them, must leave the same small
state behind as a week of them, while the counters stay exact."""

from __future__ import annotations

import itertools
import pickle
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from davit.domain import events as ev
from davit.domain.logfigures import FAILED_KEPT_PER_JOB, LogFigures
from davit.domain.notifications import Backoff, Deliveries, Message
from davit.domain.notifysettled import MAX_SETTLED
from davit.domain.notifyspec import NotifyEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOBS = ("home", "mail", "db")
KEPT = 30


class History:
    """A long log made quickly: each run a short backup that succeeds, fails, or retries first,
    some with a burst of warnings; a second a event."""

    def __init__(self) -> None:
        self.position = itertools.count(1)
        self.items: list[ev.StoredEvent] = []
        self.ended: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.read: int = 0
        self.snapshots: dict[str, list[str]] = {}

    def add(self, run_id: str, version: int, event: ev.Event) -> None:
        n = next(self.position)
        at = (T0 + timedelta(seconds=n)).isoformat()
        data = event.model_dump(mode="json")
        self.items.append(ev.StoredEvent(n, f"run-{run_id}", version, f"e{n}", event.type_name(), 1, data, at))

    def run(self, index: int, rng: random.Random) -> None:
        run_id, job = f"r{index:06d}", JOBS[index % len(JOBS)]
        spec = {"name": job, "kind": "files.backup", "repository": "local"}
        done = rng.randrange(1, 10**9)
        events: list[ev.Event] = [
            ev.RunQueued(run_id=run_id, job=job, kind="files.backup", revision="r", spec=spec, reason="schedule"),
            ev.RunPreparing(attempt=1),
            ev.RunStarted(plan=["store"]),
            ev.StepStarted(step="store"),
            *(ev.RunWarning(message=f"unreadable file {i} " + "x" * 200, step="store") for i in range(rng.choice((0, 0, 40)))),
            ev.CheckpointRecorded(step="store", cursor={}, bytes_done=done, bytes_stored=done // 3, items_done=5),
        ]
        if rng.random() < 0.2:
            events += [
                ev.RunWaitingRetry(attempt=1, error="timeout", error_type="Timeout", retry_at="later"),
                ev.RunRequeued(reason="retry"),
                ev.RunPreparing(attempt=2),
                ev.RunStarted(plan=["store"]),
            ]
            self.retries[job] += 1
        if rng.random() < 0.3:
            events.append(ev.RunFailed(error="disk full " + "y" * 500, error_type="DiskFull"))
            self.ended[(job, "failed")] += 1
        else:
            kept = self.snapshots.setdefault(job, [])
            kept[:] = [*kept[-KEPT + 1 :], run_id]  # (the job's retention: its last KEPT snapshots)
            events += [
                ev.StepCompleted(step="store"),
                ev.StepStarted(step="retention"),
                ev.StepCompleted(step="retention", summary={"kept": list(kept), "bytes_freed": 7}),
                ev.RunVerifying(),
                ev.RunSucceeded(snapshot_id=run_id),
            ]
            self.ended[(job, "succeeded")] += 1
            self.read += done
        for version, event in enumerate(events, 1):
            self.add(run_id, version, event)


def test_a_years_log_leaves_the_figures_as_small_as_a_weeks_and_the_counters_exact() -> None:
    rng, history, figures = random.Random(20), History(), LogFigures()
    index, sizes = 0, []
    while len(history.items) < 100_000:
        history.run(index, rng)
        index += 1
        if index % 2000 == 0:
            for item in history.items[figures.position :]:
                figures.apply(item)
            sizes.append(len(pickle.dumps(figures)))
    for item in history.items[figures.position :]:
        figures.apply(item)

    assert figures.events == len(history.items) >= 100_000
    for job in JOBS:
        counts = figures.jobs[job]
        assert counts.ended == {s: history.ended[(job, s)] for s in ("succeeded", "failed")}
        assert counts.retries == history.retries[job]
    assert figures.repositories["local"].backup_read_bytes == history.read
    assert figures.repositories["local"].snapshots == KEPT * len(JOBS)
    # held: the failed runs a resume may continue, the last ones of each job only
    assert len(figures.runs) == FAILED_KEPT_PER_JOB * len(JOBS)
    assert all(not view.warnings and view.error is None for view in figures.runs.values())
    # the state once the bound is reached (after the first few thousand runs) grows no more
    # (pickled, about 100 kB; the figures before the bound took 2.1 MB after 2,000 runs, 8.0 MB after 8,000)
    settled = sizes[len(sizes) // 4 :]
    assert max(settled) < 1.02 * min(settled), sizes


def test_a_failed_run_resumed_long_after_still_counts_when_it_succeeds() -> None:
    history, figures = History(), LogFigures()
    rng = random.Random(3)
    history.add("old", 1, ev.RunQueued(run_id="old", job="home", kind="files.backup", revision="r", spec={}, reason="x"))
    history.add("old", 2, ev.RunPreparing(attempt=1))
    history.add("old", 3, ev.RunStarted(plan=["store"]))
    history.add("old", 4, ev.RunFailed(error="disk full", error_type="DiskFull"))
    for index in range(500):  # other jobs' runs (this job's failures would push it out of the bound)
        history.run(index * 3 + 1, rng)
    history.add("old", 5, ev.RunRequeued(reason="resumed by operator"))
    history.add("old", 6, ev.RunPreparing(attempt=2))
    history.add("old", 7, ev.RunStarted(plan=["store"]))
    history.add("old", 8, ev.RunVerifying())
    history.add("old", 9, ev.RunSucceeded(snapshot_id="s-old"))
    for item in history.items:
        figures.apply(item)
    assert figures.jobs["home"].ended == {"failed": 1, "succeeded": 1}
    assert figures.jobs["home"].last_ended is not None and figures.jobs["home"].last_ended.run_id == "old"
    assert "old" not in figures.runs


def message(key: str, event: NotifyEvent = NotifyEvent.RUN_FAILED) -> Message:
    return Message(key, event, "title", "body", "home", None, None)


def test_a_hundred_thousand_messages_sent_leave_a_bounded_memory_of_them() -> None:
    deliveries = Deliveries(Backoff(3, 10.0, 60.0), random.Random(1))
    stale = message("job_stale:home:r000001", NotifyEvent.JOB_STALE)
    assert deliveries.add(stale, "ops", 0.0)
    for delivery in deliveries.due(0.0, 10):
        deliveries.sent(delivery)
    for n in range(100_000):
        owed = message(f"run_failed:r{n:06d}")
        assert deliveries.add(owed, "ops", float(n))
        (delivery,) = deliveries.due(float(n), 10)
        if n % 10 == 0:  # a failed attempt first: its count is dropped once the delivery settles
            deliveries.failed(delivery, float(n))
            (delivery,) = deliveries.due(float(n) + 100.0, 10)
        deliveries.sent(delivery)
    assert len(deliveries.settled) == MAX_SETTLED + 1
    assert not deliveries.attempts and not deliveries.pending and not deliveries.in_flight
    # the last ones sent, and the job's stale message, are still known: not owed again
    assert not deliveries.add(message("run_failed:r099999"), "ops", 1e6)
    assert not deliveries.add(stale, "ops", 1e6)
    # a stale spell after a new success is a new message
    assert deliveries.add(message("job_stale:home:r000777", NotifyEvent.JOB_STALE), "ops", 1e6)


def test_a_newer_stale_message_replaces_the_older_one_per_job_and_target() -> None:
    deliveries = Deliveries(Backoff(3, 10.0, 60.0), random.Random(1))
    for key, target in (("job_stale:a:b:r1", "ops"), ("job_stale:a:b:r2", "ops"), ("job_stale:a:b:r1", "mail")):
        deliveries.add(message(key, NotifyEvent.JOB_STALE), target, 0.0)
        for delivery in deliveries.due(0.0, 10):
            deliveries.sent(delivery)
    assert ("job_stale:a:b:r2", "ops") in deliveries.settled
    assert ("job_stale:a:b:r1", "mail") in deliveries.settled
    assert ("job_stale:a:b:r1", "ops") not in deliveries.settled
    assert len(deliveries.settled) == 2

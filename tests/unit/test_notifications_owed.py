"""Which notifications are owed, derived from the log alone (`davit/domain/notifications.py`):
a failure is told once, even across a restart; a recovery only after failures; a stale job once
per stale spell; retries back off and end; a job's [notify] table routes its messages."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from davit.daemon.notifications.targets import redact_reason
from davit.domain import events as ev
from davit.domain.errors import InvalidJob
from davit.domain.jobs import parse_job
from davit.domain.notifications import MAX_PENDING, Backoff, Deliveries, Message, Outbox
from davit.domain.notifyspec import NotifyEvent, route
from davit.domain.runs import CANCELLED_BY_OPERATOR, RunView, fold

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
ALL = frozenset(NotifyEvent)


class Log:
    """Stored events as the eventstore hands them out: positions grow, times from a clock."""

    def __init__(self) -> None:
        self.positions = itertools.count(1)
        self.streams: dict[str, list[ev.StoredEvent]] = {}
        self.now = T0

    def add(self, run_id: str, event: ev.Event) -> ev.StoredEvent:
        stream = ev.run_stream(run_id)
        items = self.streams.setdefault(stream, [])
        stored = ev.StoredEvent(
            next(self.positions),
            stream,
            len(items) + 1,
            f"e{len(items)}",
            event.type_name(),
            event.schema_version,
            event.model_dump(mode="json"),
            self.now.isoformat(),
        )
        items.append(stored)
        return stored

    def run(self, run_id: str, job: str, outcome: str, notify: dict[str, Any] | None = None) -> list[ev.StoredEvent]:
        spec: dict[str, Any] = {"name": job, "kind": "files.backup", **({"notify": notify} if notify else {})}
        out = [
            self.add(run_id, ev.RunQueued(run_id=run_id, job=job, kind="files.backup", revision="r", spec=spec, reason="manual")),
            self.add(run_id, ev.RunPreparing()),
            self.add(run_id, ev.RunStarted(plan=["scan"])),
        ]
        if outcome == "failed":
            out.append(self.add(run_id, ev.RunFailed(error="source gone", error_type="PermanentError")))
        elif outcome.startswith("rolled back"):
            cause = outcome.removeprefix("rolled back:").strip() or "target did not come up"
            out += [self.add(run_id, ev.RunRollingBack(cause=cause)), self.add(run_id, ev.RunRolledBack(cause=cause))]
        else:
            out += [self.add(run_id, ev.RunVerifying()), self.add(run_id, ev.RunSucceeded(snapshot_id="s"))]
        return out

    def views(self) -> list[RunView]:
        return [fold(stream.removeprefix("run-"), items) for stream, items in self.streams.items()]


def keys(messages: list[Message]) -> list[str]:
    return [m.key for m in messages]


def live(log: Log, outbox: Outbox, *runs: list[ev.StoredEvent]) -> list[Message]:
    return [m for stored in runs for item in stored for m in outbox.apply(item)]


def deliveries(max_attempts: int = 3) -> Deliveries:
    return Deliveries(Backoff(max_attempts, 10.0, 60.0), random.Random(7))


def sent_record(key: str, target: str) -> ev.StoredEvent:
    data = ev.NotificationSent(key=key, target=target, event="run_failed", attempt=1).model_dump(mode="json")
    return ev.StoredEvent(99, ev.NOTIFICATIONS_STREAM, 1, "n1", "NotificationSent", 1, data, T0.isoformat())


def test_a_failed_run_owes_one_message_and_a_success_after_it_owes_a_recovery() -> None:
    log, outbox = Log(), Outbox(catch_up_seconds=86400)
    assert keys(live(log, outbox, log.run("r1", "docs", "failed"))) == ["run_failed:r1"]
    assert keys(live(log, outbox, log.run("r2", "docs", "succeeded"))) == ["job_recovered:r2"]
    assert live(log, outbox, log.run("r3", "docs", "succeeded")) == []  # no failure before it


def test_a_failure_davitd_was_killed_before_telling_is_owed_after_the_restart_and_not_twice() -> None:
    log = Log()
    log.run("r1", "docs", "failed")
    # the restart: the outbox is seeded from the folded runs; nothing was recorded as sent
    owed = Outbox(catch_up_seconds=86400).seed(log.views(), T0 + timedelta(minutes=5))
    assert keys(owed) == ["run_failed:r1"]
    box = deliveries()
    assert box.add(owed[0], "ops", now=0.0)
    # sent, recorded, and davitd restarts once more: the record settles it
    again = deliveries()
    again.record(sent_record("run_failed:r1", "ops"))
    assert not again.add(Outbox(catch_up_seconds=86400).seed(log.views(), T0)[0], "ops", now=0.0)


def test_a_migration_rolled_back_after_a_failure_is_told_as_a_failure_but_a_cancelled_one_is_not() -> None:
    log, outbox = Log(), Outbox(catch_up_seconds=86400)
    assert keys(live(log, outbox, log.run("r1", "shop", "rolled back"))) == ["run_failed:r1"]
    assert live(log, outbox, log.run("r2", "shop", f"rolled back: {CANCELLED_BY_OPERATOR}")) == []
    # the same verdicts when davitd learns of them at its start
    assert keys(Outbox(catch_up_seconds=86400).seed(log.views(), T0)) == ["run_failed:r1"]


def test_a_run_request_for_no_such_job_is_not_a_job_failure() -> None:
    log, outbox = Log(), Outbox(catch_up_seconds=86400)
    queued = ev.RunQueued(run_id="r9", job="typo", kind="", revision="", spec={}, reason="manual")
    refused = [log.add("r9", queued), log.add("r9", ev.RunFailed(error="no job named 'typo'", error_type="InvalidJob"))]
    assert live(log, outbox, refused) == [] and outbox.seed(log.views(), T0) == []


def test_old_failures_are_not_owed_when_notifications_are_first_turned_on() -> None:
    log = Log()
    log.run("r1", "docs", "failed")
    assert Outbox(catch_up_seconds=86400).seed(log.views(), T0 + timedelta(days=3)) == []


def test_a_recovery_seen_at_start_up_still_knows_the_failure_before_it() -> None:
    log = Log()
    log.run("r1", "docs", "failed")
    log.run("r2", "docs", "succeeded")
    assert keys(Outbox(catch_up_seconds=86400).seed(log.views(), T0)) == ["run_failed:r1", "job_recovered:r2"]


def test_a_stale_job_is_told_once_per_stale_spell() -> None:
    log, outbox = Log(), Outbox(catch_up_seconds=86400)
    live(log, outbox, log.run("r1", "docs", "succeeded"))
    day = 86400
    assert outbox.stale("docs", day, T0, None, T0 + timedelta(hours=23)) is None
    first = outbox.stale("docs", day, T0, None, T0 + timedelta(hours=25))
    later = outbox.stale("docs", day, T0, None, T0 + timedelta(hours=30))
    assert first is not None and later is not None and first.key == later.key == "job_stale:docs:r1"
    box = deliveries()
    assert box.add(first, "ops", now=0.0)
    box.sent(box.due(0.0, 10)[0])
    assert not box.add(later, "ops", now=1.0)  # checked every minute, told once
    log.now = T0 + timedelta(hours=31)
    live(log, outbox, log.run("r2", "docs", "succeeded"))  # it recovers ...
    assert outbox.stale("docs", day, T0, None, T0 + timedelta(hours=40)) is None
    again = outbox.stale("docs", day, T0, None, T0 + timedelta(hours=56))  # ... and goes stale again
    assert again is not None and again.key == "job_stale:docs:r2" and box.add(again, "ops", now=2.0)


def test_a_job_that_never_succeeded_is_stale_from_its_definition() -> None:
    message = Outbox(catch_up_seconds=0).stale("new", 3600, T0, None, T0 + timedelta(hours=2))
    assert message is not None and message.key == "job_stale:new:never"


def test_an_interrupted_and_resumed_run_owes_a_message_per_interruption() -> None:
    log, outbox = Log(), Outbox(catch_up_seconds=86400)
    queued = log.run("r1", "docs", "failed")[:3]
    live(log, outbox, queued)
    told = live(
        log,
        outbox,
        [log.add("r1", ev.RunInterrupted(reason="found running at start-up")), log.add("r1", ev.RunRequeued(reason="resumed"))],
    )
    assert keys(told) == ["run_resumed:r1:1"] and "found running at start-up" in told[0].body


def test_a_failed_delivery_is_retried_with_backoff_and_given_up_after_its_attempts() -> None:
    box = deliveries(max_attempts=3)
    message = Message("run_failed:r1", NotifyEvent.RUN_FAILED, "t", "b", "docs", "r1")
    box.add(message, "ops", now=0.0)
    [attempt] = box.due(0.0, 10)
    assert box.due(0.0, 10) == []  # in flight: not given out twice
    assert box.failed(attempt, now=0.0) is False
    assert box.due(4.9, 10) == [] and 5.0 <= (box.next_due() or 0) <= 10.0  # 10 s, jittered down to half
    [attempt] = box.due(10.0, 10)
    assert box.failed(attempt, now=10.0) is False
    [attempt] = box.due(30.0, 10)
    assert box.failed(attempt, now=30.0) is True  # the third: given up
    assert box.pending == {} and not box.add(message, "ops", now=40.0)


def test_attempts_recorded_before_a_restart_count_against_the_limit() -> None:
    box = deliveries(max_attempts=3)
    data = ev.NotificationFailed(key="k", target="ops", event="run_failed", attempt=2, reason="x").model_dump(mode="json")
    box.record(ev.StoredEvent(5, ev.NOTIFICATIONS_STREAM, 2, "n", "NotificationFailed", 1, data, T0.isoformat()))
    box.add(Message("k", NotifyEvent.RUN_FAILED, "t", "b"), "ops", now=0.0)
    [attempt] = box.due(0.0, 10)  # tried again at once after the restart ...
    assert box.failed(attempt, now=0.0) is True  # ... and that third attempt was the last


def test_the_outbox_is_bounded() -> None:
    box = deliveries()
    for i in range(MAX_PENDING + 5):
        box.add(Message(f"k{i}", NotifyEvent.RUN_FAILED, "t", "b"), "ops", now=0.0)
    assert len(box.pending) == MAX_PENDING and box.dropped == 5


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        pytest.param(None, ["chat", "ops"], id="no-notify-table-all-targets-that-want-it"),
        pytest.param({"enabled": False}, [], id="disabled"),
        pytest.param({"targets": ["ops"]}, ["ops"], id="narrowed"),
        pytest.param({"urls_env": "DOCS_HOOK"}, ["job:docs"], id="own-target-replaces"),
        pytest.param({"urls_env": "DOCS_HOOK", "targets": ["chat"]}, ["chat", "job:docs"], id="own-target-and-named"),
        pytest.param({"urls_env": "DOCS_HOOK", "events": ["job_stale"]}, [], id="own-target-not-for-this-event"),
    ],
)
def test_a_jobs_notify_table_routes_its_messages(notify: dict[str, Any] | None, expected: list[str]) -> None:
    targets = {"ops": ALL, "chat": frozenset({NotifyEvent.RUN_FAILED}), "quiet": frozenset({NotifyEvent.JOB_STALE})}
    assert route(NotifyEvent.RUN_FAILED, "docs", notify, targets) == expected


@pytest.mark.parametrize(
    ("table", "field"),
    [
        pytest.param('urls = ["json://h/x"]', "notify.urls", id="inline-urls"),
        pytest.param('urls_file = "relative.urls"', "notify.urls_file", id="relative-file"),
        pytest.param('events = ["run_exploded"]', "notify.events.0", id="unknown-event"),
        pytest.param('urls_env = "A-B"', "notify.urls_env", id="bad-env-name"),
    ],
)
def test_a_bad_notify_table_is_refused_naming_the_field(table: str, field: str) -> None:
    text = f'name = "docs"\nkind = "files.backup"\n[source]\npath = "/srv"\n[notify]\n{table}\n'
    with pytest.raises(InvalidJob) as err:
        parse_job(text, "docs.toml")
    assert field in [p.field for p in err.value.problems]


def test_a_failure_reason_loses_the_url_and_its_tokens() -> None:
    urls = ("json://hooks.example:8443/services/T0KEN1/S3CRETT?apikey=K3YVALUE", "mailto://bob:hunter22@mail.example")
    text = (
        "Failed to send JSON POST to https://hooks.example:8443/services/T0KEN1/S3CRETT?apikey=K3YVALUE: 500;\n"
        "SMTP auth for bob with hunter22 refused\x1b[31m; token T0KEN1"
    )
    reason = redact_reason(text, urls)
    for secret in ("T0KEN1", "S3CRETT", "K3YVALUE", "hunter22", "hooks.example:8443", "\x1b", "\n"):
        assert secret not in reason
    assert "500" in reason and "refused" in reason


def test_an_event_log_outage_is_told_once_per_outage() -> None:
    from davit.daemon.loghealth import LogHealth
    from davit.daemon.notify import Notifier
    from davit.domain.errors import PermanentError

    told: list[str] = []
    health = LogHealth(Notifier({}))
    health.on_outage = told.append
    health.noticed(PermanentError("disk full"))
    health.noticed(PermanentError("disk full"))  # the same outage, retried
    assert len(told) == 1 and "event log cannot be written: disk full" in told[0]
    health.succeeded()
    health.noticed(PermanentError("I/O error"))  # a new outage
    assert len(told) == 2

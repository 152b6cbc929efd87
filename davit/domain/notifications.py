"""Notifications as data: which events are worth a message, a job's `[notify]` table, and the
outbox that decides, from the event log alone, which messages are owed to which target.

What is owed is derived, never stored apart: a message has a key made from the facts that
caused it (`run_failed:RUN`, `job_recovered:RUN`, `run_resumed:RUN:N`, `job_stale:JOB:LASTSUCCESS`),
and each delivery attempt is recorded as `NotificationSent` / `NotificationFailed` with that key
and the target's name. After a restart, a trigger without a settled record is owed again; one
with a `NotificationSent` is not sent twice. A job is stale once per last success: the key names
that success, so it fires again only after a new success and a new silence. Messages for the
past are owed only within `catch_up_seconds`, so turning notifications on does not mail a year
of old failures. Pure: the caller passes the clock (wall time for staleness, monotonic time
for backoff).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from davit.domain import events as ev
from davit.domain.machine import RunState
from davit.domain.notifysettled import MAX_SETTLED, SettledKeys
from davit.domain.notifyspec import NotifyEvent
from davit.domain.runs import CANCELLED_BY_OPERATOR, RunView

MAX_PENDING = 1000  # deliveries waiting at most; beyond it the oldest are dropped (and logged)


# --- messages and what is owed ---------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    key: str
    event: NotifyEvent
    title: str
    body: str
    job: str | None = None
    run_id: str | None = None
    notify: dict[str, Any] | None = None  # the job's [notify] table, for routing


@dataclass
class _Job:
    last_outcome: str | None = None  # "succeeded" | "failed"
    outcome_position: int = 0
    last_success_run: str | None = None
    last_success_at: datetime | None = None


@dataclass
class _Run:
    job: str
    notify: dict[str, Any] | None
    interruptions: int = 0
    interrupted: str | None = None  # the reason, until it is requeued


def _notify_of(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    value = spec.get("notify")
    return dict(value) if isinstance(value, dict) else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class Outbox:
    """Folds run events into the messages they owe. Feed it the runs known at start (`seed`),
    then every later stored event (`apply`); each returns the messages that became owed."""

    catch_up_seconds: float
    jobs: dict[str, _Job] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)

    def seed(self, views: Iterable[RunView], now: datetime) -> list[Message]:
        since = now - timedelta(seconds=self.catch_up_seconds)
        owed: list[Message] = []
        for view in sorted(views, key=lambda v: v.last_position):
            if not view.job or not view.kind:
                continue  # a request refused before it became a run (`davit run NOSUCHJOB`)
            finished = _time(view.finished_at)
            recent = finished is None or finished >= since
            if view.state is RunState.SUCCEEDED:
                message = self._succeeded(view.run_id, view.job, _notify_of(view.spec), view.last_position, finished)
                owed += [message] if message and recent else []
            elif view.state is RunState.FAILED or (view.state is RunState.ROLLED_BACK and not view.cancelled):
                message = self._failed(view.run_id, view.job, _notify_of(view.spec), view.last_position, view.error or "")
                owed += [message] if recent else []
            else:
                self.runs[view.run_id] = _Run(view.job, _notify_of(view.spec), view.interruptions)
            if view.interruptions and recent:
                owed.append(_resumed(view.run_id, view.job, _notify_of(view.spec), view.interruptions, "resumed"))
        return owed

    def apply(self, stored: ev.StoredEvent) -> list[Message]:
        if not stored.stream.startswith("run-"):
            return []
        run_id = stored.stream.removeprefix("run-")
        if stored.type == ev.RunQueued.type_name():
            data = stored.data
            if data.get("kind"):  # (none: a refused request, `davit run NOSUCHJOB`, not a job's failure)
                self.runs.setdefault(run_id, _Run(str(data.get("job", "")), _notify_of(data.get("spec") or {})))
            return []
        run = self.runs.get(run_id)
        if run is None or not run.job:
            return []
        if stored.type == ev.RunFailed.type_name():
            del self.runs[run_id]
            return [self._failed(run_id, run.job, run.notify, stored.position, str(stored.data.get("error", "")))]
        cause = str(stored.data.get("cause", ""))
        if stored.type == ev.RunRolledBack.type_name() and cause != CANCELLED_BY_OPERATOR:
            del self.runs[run_id]  # a failure whose changes were undone (a migration rolled back) is a failure
            return [self._failed(run_id, run.job, run.notify, stored.position, f"rolled back: {cause}")]
        if stored.type == ev.RunSucceeded.type_name():
            del self.runs[run_id]
            message = self._succeeded(run_id, run.job, run.notify, stored.position, _time(stored.recorded_at))
            return [message] if message else []
        if stored.type in (ev.RunCancelled.type_name(), ev.RunRolledBack.type_name()):
            del self.runs[run_id]
        elif stored.type == ev.RunInterrupted.type_name():
            run.interrupted = str(stored.data.get("reason", ""))
        elif stored.type == ev.RunRequeued.type_name() and run.interrupted is not None:
            run.interruptions += 1
            reason, run.interrupted = run.interrupted, None
            return [_resumed(run_id, run.job, run.notify, run.interruptions, reason)]
        return []

    def _failed(self, run_id: str, job: str, notify: dict[str, Any] | None, position: int, error: str) -> Message:
        track = self.jobs.setdefault(job, _Job())
        if position >= track.outcome_position:
            track.last_outcome, track.outcome_position = "failed", position
        return Message(
            f"run_failed:{run_id}",
            NotifyEvent.RUN_FAILED,
            f"davit: job {job} failed",
            f"Run {run_id} of job {job} failed after its retries: {error}",
            job,
            run_id,
            notify,
        )

    def _succeeded(
        self, run_id: str, job: str, notify: dict[str, Any] | None, position: int, at: datetime | None
    ) -> Message | None:
        track = self.jobs.setdefault(job, _Job())
        if position < track.outcome_position:
            return None  # seen already (a seeded run met again in the tail)
        recovered = track.last_outcome == "failed"
        track.last_outcome, track.outcome_position = "succeeded", position
        track.last_success_run, track.last_success_at = run_id, at
        if not recovered:
            return None
        return Message(
            f"job_recovered:{run_id}",
            NotifyEvent.JOB_RECOVERED,
            f"davit: job {job} recovered",
            f"Run {run_id} of job {job} succeeded after failures.",
            job,
            run_id,
            notify,
        )

    def stale(
        self, job: str, max_age_seconds: int, defined_at: datetime, notify: dict[str, Any] | None, now: datetime
    ) -> Message | None:
        """The stale message `job` owes now, if its last success (or its definition, if it
        never succeeded) is older than `max_age_seconds`. The key names that success: once
        sent, it is not owed again until a new success has gone stale in its turn."""
        track = self.jobs.get(job) or _Job()
        since = track.last_success_at or defined_at
        if now - since <= timedelta(seconds=max_age_seconds):
            return None
        last = track.last_success_run or "never"
        return Message(
            f"job_stale:{job}:{last}",
            NotifyEvent.JOB_STALE,
            f"davit: job {job} is stale",
            f"Job {job} has had no successful run since {since.isoformat(timespec='seconds')} "
            f"(max_age {max_age_seconds} s; last success: {last}).",
            job,
            None,
            notify,
        )

    def fresh_since(self, job: str) -> str | None:
        """The run of `job`'s last success (a pending stale message for an older one is moot)."""
        track = self.jobs.get(job)
        return track.last_success_run if track else None


def _resumed(run_id: str, job: str, notify: dict[str, Any] | None, n: int, reason: str) -> Message:
    return Message(
        f"run_resumed:{run_id}:{n}",
        NotifyEvent.RUN_RESUMED,
        f"davit: run of {job} interrupted and resumed",
        f"Run {run_id} of job {job} was interrupted ({reason}) and resumed from its last checkpoint.",
        job,
        run_id,
        notify,
    )


def log_unwritable(problem: str, since: str) -> Message:
    """`since`: when the outage started (wall clock): one message per outage, across restarts."""
    return Message(f"log_unwritable:{since}", NotifyEvent.LOG_UNWRITABLE, "davit: event log cannot be written", problem)


# --- deliveries: attempts, backoff, the bound -------------------------------------------------


@dataclass
class Delivery:
    message: Message
    target: str
    attempts: int = 0  # attempts made so far (recorded ones included, after a restart)
    due: float = 0.0  # monotonic time of the next attempt


@dataclass(frozen=True)
class Backoff:
    max_attempts: int
    initial_seconds: float
    max_seconds: float

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Exponential, jittered, capped wait before attempt `attempts + 1`."""
        step = min(self.max_seconds, self.initial_seconds * 2 ** min(attempts - 1, 30))
        return step * rng.uniform(0.5, 1.0)


@dataclass
class Deliveries:
    """The deliveries owed: added once per (key, target) unless already settled in the log;
    given out when due; after a failure due again later, until `max_attempts`."""

    backoff: Backoff
    rng: random.Random = field(default_factory=random.Random)
    settled: SettledKeys = field(default_factory=SettledKeys)  # bounded: notifysettled.py
    # recorded failures of deliveries not settled (bounded too: a settled one's count is dropped)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    pending: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    dropped: int = 0

    def record(self, stored: ev.StoredEvent) -> None:
        """Take in a NotificationSent / NotificationFailed read from the log."""
        key = (str(stored.data.get("key", "")), str(stored.data.get("target", "")))
        if stored.type == ev.NotificationSent.type_name() or (
            stored.type == ev.NotificationFailed.type_name() and stored.data.get("final")
        ):
            self._settle(key)
            self.pending.pop(key, None)
        elif stored.type == ev.NotificationFailed.type_name():
            self._count(key, max(self.attempts.get(key, 0), int(stored.data.get("attempt", 0))))

    def _settle(self, key: tuple[str, str]) -> None:
        self.settled.add(key)
        self.attempts.pop(key, None)

    def _count(self, key: tuple[str, str], attempts: int) -> None:
        """Remember `key`'s failed attempts; past the bound the oldest counts go (a delivery
        dropped from the outbox, never settled, would otherwise hold its count for ever)."""
        self.attempts.pop(key, None)
        self.attempts[key] = attempts
        while len(self.attempts) > MAX_SETTLED:
            del self.attempts[next(iter(self.attempts))]

    def add(self, message: Message, target: str, now: float) -> bool:
        key = (message.key, target)
        if key in self.settled or key in self.pending or key in self.in_flight:
            return False
        # attempts recorded before a restart count against the limit, but the first attempt
        # of this process is due at once: the wait was counted on the old process's clock, and
        # a restart is when a target fixed meanwhile should hear what it missed
        self.pending[key] = Delivery(message, target, self.attempts.get(key, 0), now)
        while len(self.pending) > MAX_PENDING:
            del self.pending[next(iter(self.pending))]
            self.dropped += 1
        return True

    def due(self, now: float, limit: int) -> list[Delivery]:
        ready = sorted((d for d in self.pending.values() if d.due <= now), key=lambda d: d.due)[:limit]
        for d in ready:
            key = (d.message.key, d.target)
            del self.pending[key]
            self.in_flight.add(key)
        return ready

    def next_due(self) -> float | None:
        return min((d.due for d in self.pending.values()), default=None)

    def sent(self, delivery: Delivery) -> None:
        key = (delivery.message.key, delivery.target)
        self.in_flight.discard(key)
        self._settle(key)

    def failed(self, delivery: Delivery, now: float) -> bool:
        """Count the failed attempt; True if it was the last (the delivery is given up)."""
        key = (delivery.message.key, delivery.target)
        self.in_flight.discard(key)
        delivery.attempts += 1
        self._count(key, delivery.attempts)
        if delivery.attempts >= self.backoff.max_attempts:
            self._settle(key)
            return True
        delivery.due = now + self.backoff.delay(delivery.attempts, self.rng)
        self.pending[key] = delivery
        return False

    def drop_stale_of(self, job: str, fresh_run: str | None) -> None:
        """A job that succeeded again no longer owes a stale message for an older success."""
        prefix = f"job_stale:{job}:"
        for key in [k for k in self.pending if k[0].startswith(prefix) and k[0] != f"{prefix}{fresh_run}"]:
            del self.pending[key]

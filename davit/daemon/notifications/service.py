"""The daemon's notification task: it follows the event log, works out which messages are owed
to which target (`davit/domain/notifications.py`), and delivers them.

It never holds up a run: it reads the log as any reader does (by position, a page a second),
and each delivery runs in a child process, at most `PARALLEL` at a time, killed at its
deadline; a target that is down or hangs only delays its own retries. Each attempt is recorded as
`NotificationSent` or `NotificationFailed` in the `notifications` stream, and that record is what
makes a message settled: at start-up the records are read back and the runs the supervisor
folded are seeded into the outbox, so a message owed when davitd was killed is sent after the
restart, and one already sent is not sent again (at most the attempt in flight at the kill is
repeated: its outcome was not recorded). That a log cannot be written is not in the log: the
store's outage watch calls `outage` directly, and the message's record lands once the log takes
writes again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread

from davit.adapters.secrets import SecretUnavailable
from davit.daemon.config import NotifyTarget, Settings
from davit.daemon.notifications.sender import deliver
from davit.daemon.notifications.targets import resolve_target
from davit.daemon.recorder import append_unordered
from davit.daemon.scheduler import Clock
from davit.domain import events as ev
from davit.domain.durations import parse_duration
from davit.domain.notifications import Backoff, Deliveries, Delivery, Message, Outbox, log_unwritable
from davit.domain.notifyspec import JobNotify, NotifyEvent, job_target_name, route
from davit.domain.ports import EventLog
from davit.domain.runs import RunView

log = logging.getLogger("davitd.notify")
POLL_SECONDS = 1.0
PAGE = 500
PARALLEL = 2  # deliveries at a time; a hanging target blocks at most one of these


class NotificationService:
    def __init__(
        self,
        store: EventLog,
        settings: Callable[[], Settings],
        runs: Mapping[str, RunView],
        jobs: Callable[[], Iterable[Any]],
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._runs = runs
        self._jobs = jobs
        self._clock = clock
        section = settings().model.notifications
        self._outbox = Outbox(catch_up_seconds=section.catch_up_hours * 3600)
        self._deliveries = Deliveries(self._backoff(), rng or random.Random())
        self._wake = anyio.Event()
        self._after = 0
        self._next_stale_check = 0.0
        self._reported_drops = 0

    def _backoff(self) -> Backoff:
        s = self._settings().model.notifications
        return Backoff(s.max_attempts, s.initial_backoff_seconds, s.max_backoff_seconds)

    def _targets(self) -> dict[str, NotifyTarget]:
        return self._settings().model.notifications.all_targets()

    # --- the hook for the log's outage watch ----------------------------------------------------

    def outage(self, problem: str) -> None:
        """The event log cannot be written (called by `LogHealth` when an outage starts)."""
        self._owe([log_unwritable(problem, self._clock.now().isoformat())])

    # --- the task --------------------------------------------------------------------------------

    async def run(self) -> None:
        # by the (stream, version) key: not a scan of the whole log at every start
        for stored in await self._store.read_stream(ev.NOTIFICATIONS_STREAM):
            self._deliveries.record(stored)
        # the runs as folded up to the head, then the log after it (nothing awaited in between)
        self._after = await self._store.head_position()
        self._owe(self._outbox.seed(list(self._runs.values()), self._clock.now()))
        async with anyio.create_task_group() as tg:
            while True:
                self._wake = anyio.Event()
                await self._follow_log()
                self._check_stale()
                self._start_due(tg)
                self._report_drops()
                with anyio.move_on_after(self._wait()):
                    await self._wake.wait()

    async def _follow_log(self) -> None:
        while True:
            page = await self._store.read_all(self._after, PAGE)
            for stored in page:
                self._after = stored.position
                if stored.stream == ev.NOTIFICATIONS_STREAM:
                    self._deliveries.record(stored)
                    continue
                self._owe(self._outbox.apply(stored))
                if stored.type == ev.RunSucceeded.type_name():
                    job = self._outbox_job_of(stored)
                    if job:
                        self._deliveries.drop_stale_of(job, self._outbox.fresh_since(job))
            if len(page) < PAGE:
                return

    def _outbox_job_of(self, stored: ev.StoredEvent) -> str | None:
        view = self._runs.get(stored.stream.removeprefix("run-"))
        return view.job if view else None

    def _check_stale(self) -> None:
        now_mono = self._clock.monotonic()
        if now_mono < self._next_stale_check:
            return
        self._next_stale_check = now_mono + self._settings().model.notifications.stale_check_seconds
        now = self._clock.now()
        for job in self._jobs():
            max_age = job.spec.get("max_age")
            if not max_age or not job.defined_at:
                continue
            message = self._outbox.stale(
                job.name, parse_duration(max_age), datetime.fromisoformat(job.defined_at), job.spec.get("notify"), now
            )
            if message is not None:
                self._owe([message])

    def _owe(self, messages: list[Message]) -> None:
        targets = {name: frozenset(t.events) for name, t in self._targets().items()}
        now = self._clock.monotonic()
        added = False
        for message in messages:
            for target in route(message.event, message.job, message.notify, targets):
                added = self._deliveries.add(message, target, now) or added
        if added:
            self._wake.set()

    def _wait(self) -> float:
        due = self._deliveries.next_due()
        wait = POLL_SECONDS if due is None else min(POLL_SECONDS, due - self._clock.monotonic())
        return max(wait, 0.0)

    def _start_due(self, tg: anyio.abc.TaskGroup) -> None:
        room = PARALLEL - len(self._deliveries.in_flight)
        if room <= 0:
            return
        for delivery in self._deliveries.due(self._clock.monotonic(), room):
            tg.start_soon(self._attempt, delivery)

    def _report_drops(self) -> None:
        if self._deliveries.dropped > self._reported_drops:
            log.warning(
                "%d notification(s) dropped: more than the outbox holds are waiting (targets down?)",
                self._deliveries.dropped - self._reported_drops,
            )
            self._reported_drops = self._deliveries.dropped

    # --- one attempt -----------------------------------------------------------------------------

    def _target_config(self, delivery: Delivery) -> NotifyTarget | None:
        message = delivery.message
        if message.job is not None and delivery.target == job_target_name(message.job):
            spec = JobNotify.model_validate(message.notify or {})
            return NotifyTarget(urls_file=spec.urls_file, urls_env=spec.urls_env)
        return self._targets().get(delivery.target)

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            reason = await self._send(delivery)
        except Exception as exc:  # this delivery's failure, not the end of every notification
            # (the type only: what an unexpected error says is not known to be free of a URL)
            log.error("notification %s to %s: %s while sending", delivery.message.key, delivery.target, type(exc).__name__)
            reason = f"{type(exc).__name__} while sending (an error of davit's, not of the target)"
        await self._record(delivery, reason)
        self._wake.set()

    async def _send(self, delivery: Delivery) -> str | None:
        message = delivery.message
        config = self._target_config(delivery)
        settings = self._settings()
        if config is None:
            return "the target is no longer configured"
        try:
            # in a thread: a urls_file may be a pipe, read for up to secrets.PIPE_WAIT_SECONDS,
            # and this loop runs every run, the scheduler and the heartbeat
            target = await anyio.to_thread.run_sync(
                resolve_target, delivery.target, config, settings.config_file.parent, abandon_on_cancel=True
            )
        except SecretUnavailable as exc:
            return str(exc)  # names the file or variable, never a URL
        failure = message.event in (NotifyEvent.RUN_FAILED, NotifyEvent.JOB_STALE, NotifyEvent.LOG_UNWRITABLE)
        return await deliver(target, message.title, message.body, failure, settings.model.notifications.timeout_seconds)

    async def _record(self, delivery: Delivery, reason: str | None) -> None:
        message = delivery.message
        common = {
            "key": message.key,
            "target": delivery.target,
            "event": message.event.value,
            "job": message.job,
            "run_id": message.run_id,
        }
        if reason is None:
            self._deliveries.sent(delivery)
            event: ev.Event = ev.NotificationSent(attempt=delivery.attempts + 1, **common)
            log.info("notification %s sent to %s", message.key, delivery.target)
        else:
            attempt = delivery.attempts + 1
            final = self._deliveries.failed(delivery, self._clock.monotonic())
            event = ev.NotificationFailed(attempt=attempt, reason=reason, final=final, **common)
            log.warning(
                "notification %s to %s failed (attempt %d%s): %s",
                message.key,
                delivery.target,
                attempt,
                ", given up" if final else ", will retry",
                reason,
            )
        try:
            await append_unordered(self._store, ev.NOTIFICATIONS_STREAM, event)
        except Exception as exc:  # not recorded: a restart may repeat this attempt, nothing worse
            log.error("notification %s: its outcome could not be recorded: %s", message.key, type(exc).__name__)

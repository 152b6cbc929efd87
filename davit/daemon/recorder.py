"""Recording a run's events: one writer per run, the fold kept current, legality checked first.

`RunRecorder.record` refuses an event the run machine would refuse (before anything is
written), appends with the run's current version as the expected version, and applies what
was stored to the in-memory fold, so `view` is always what replaying the log would give.
`WorkerContext` is the `RunContext` handed to blocking adapter code in worker threads (any
thread: it holds the event loop's token): each call that records something blocks until the
event is durable.

When the log cannot be written (full disk, I/O error): an event whose append failed stays the
recorder's *unsent* event, with the id it was given, and is appended before anything else on
the run's stream, so it is never lost, and never written twice if the failed try did land. The
executor's records wait the outage out (the store retries them); a worker's record tries once
(and not at all while an outage is known), and on failure its run stops there with
`EventLogStop`, so no worker thread sits on a full disk and shutdown stays prompt.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.from_thread
import anyio.lowlevel

from davit.domain import events as ev
from davit.domain.errors import LOG_UNWRITABLE, ConcurrencyError, EventLogStop, IllegalTransition, RunStopped
from davit.domain.machine import RunState
from davit.domain.ports import RunLog
from davit.domain.runs import RunView, admit, apply, fold

if TYPE_CHECKING:
    from davit.daemon.leases import OwnLease
    from davit.daemon.scheduler import Clock

log = logging.getLogger("davitd.run")

# States whose entry other code already logs with its reason (the executor: an end, a retry,
# an interruption, a rollback; the supervisor: queued): the recorder says the others.
_SAID_ELSEWHERE = frozenset(
    {
        RunState.QUEUED,
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.WAITING_RETRY,
        RunState.INTERRUPTED,
        RunState.ROLLING_BACK,
        RunState.ROLLED_BACK,
        RunState.CANCELLING,
        RunState.CANCELLED,
    }
)


def _say(view: RunView, before: RunState, event: ev.Event) -> None:
    """One line per state change and per warning, at INFO (a warning at WARNING)."""
    if isinstance(event, ev.RunWarning):
        log.warning("run %s (%s): %s", view.run_id, view.job, event.message)
    elif view.state is not before and view.state not in _SAID_ELSEWHERE:
        log.info("run %s (%s, %s) %s (attempt %d)", view.run_id, view.job, view.kind, view.state.value, view.attempt)


def new_event_id() -> str:
    return uuid.uuid4().hex


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


async def append_unordered(log: RunLog, stream: str, *events: ev.Event) -> None:
    """Append to a stream where order against other writers does not matter (daemon, requests).

    Event ids are fixed before the first try, so a retry after a lost acknowledgement is a no-op.
    """
    new = [ev.NewEvent.of(new_event_id(), e) for e in events]
    for _ in range(100):
        try:
            await log.append(stream, await log.stream_version(stream), new)
            return
        except ConcurrencyError:
            continue
    raise ConcurrencyError(stream, -1, await log.stream_version(stream))


class RunRecorder:
    def __init__(self, log: RunLog, view: RunView, ids: Callable[[], str] = new_event_id) -> None:
        self.log = log
        self.view = view
        self._ids = ids
        self._lock = asyncio.Lock()
        self._unsent: list[ev.NewEvent] = []
        self._deferred: list[ev.Event] = []  # admitted, not tried yet: they go with the next record
        self._ahead = view.state  # the state once they are (`ahead`)
        # Set when a worker of this run was stopped because the log could not be written: the
        # executor then treats whatever the work raised on its way out as that stop.
        self.stopped_by_log: EventLogStop | None = None
        # The lease this daemon holds on the run (several daemons on one log, `leases.py`):
        # a worker's record is not even tried once it is lost or past its deadline.
        self.lease: OwnLease | None = None
        self.lease_clock: Clock | None = None

    @classmethod
    async def load(cls, log: RunLog, run_id: str) -> RunRecorder:
        return cls(log, fold(run_id, await log.read_stream(ev.run_stream(run_id))))

    @property
    def run_id(self) -> str:
        return self.view.run_id

    async def record(self, *events: ev.Event, patient: bool = True) -> None:
        """Record events (after any unsent ones). `patient=False`: try once; a log that cannot
        be written raises one of `LOG_UNWRITABLE` and leaves these events unsent."""
        async with self._lock:
            await self._send(patient)
            events = (*self._deferred, *events)
            if events:
                admit(self.view, events)  # (refused: the deferred ones stay deferred)
                self._deferred = []
                self._unsent = [ev.NewEvent.of(self._ids(), e) for e in events]
                await self._send(patient)

    async def defer(self, *events: ev.Event) -> None:
        """Admit events now and append them with the next `record`, in the same transaction:
        for an event nothing waits on being durable (the completion of a run's last step; the
        executor's entry into a state whose work follows, `RunPreparing` and `RunVerifying`).
        Not durable until then: after a crash in between, the run resumes as if the events had
        not happened (the step is done again, as after a crash just before its completion was
        recorded; `prepare` or `finish` is done again, as after a crash during it)."""
        async with self._lock:
            self._ahead = admit(self.view, (*self._deferred, *events))
            self._deferred += events

    @property
    def ahead(self) -> RunState:
        """The run's state once its deferred events are appended (`view.state` if none are)."""
        return self._ahead if self._deferred else self.view.state

    @property
    def deferring(self) -> bool:
        return bool(self._deferred)

    def deferred_completion(self, step: str) -> bool:
        """Whether the completion of `step` is deferred (`defer`): done, not yet in the log."""
        return any(isinstance(e, ev.StepCompleted) and e.step == step for e in self._deferred)

    async def flush(self) -> None:
        """Append the unsent and deferred events, waiting for the log to take them."""
        await self.record()

    async def _send(self, patient: bool) -> None:
        if not self._unsent:
            return
        stream = ev.run_stream(self.view.run_id)
        try:
            # Same ids, same expected version on every try: a try that landed is replayed.
            # The stored events come back from the writer (no read of the stream per event).
            stored = await self.log.append_read_back(stream, self.view.version, self._unsent, patient=patient)
        except LOG_UNWRITABLE:
            raise  # kept unsent: the log could not take them, they are still to be recorded
        except BaseException:
            self._unsent = []  # refused (stale version, bad event): as before, not retried
            raise
        self._unsent = []
        for item in stored:
            if item.version <= self.view.version:
                continue  # already applied by the daemon's follower of the log (several daemons)
            before = self.view.state
            apply(self.view, item)
            event = ev.decode(item) if item.type == ev.RunWarning.type_name() or self.view.state is not before else None
            if event is not None:
                _say(self.view, before, event)


class WorkerContext:
    """The `RunContext` of one run, used from the worker thread that runs its `JobWork`."""

    def __init__(self, recorder: RunRecorder, stop: threading.Event, stop_reason: Callable[[], str]) -> None:
        self.recorder = recorder
        self.run_id = recorder.run_id
        self._stop = stop
        self._stop_reason = stop_reason
        # Made on the event loop, so threads the adapter starts itself can record too.
        self._loop = anyio.lowlevel.current_token()
        # Each step's totals as its work last told them (`step_total`), for its checkpoints.
        self._totals: dict[str, tuple[int | None, int | None]] = {}

    def _record(self, *events: ev.Event) -> None:
        rec = self.recorder
        if rec.lease is not None and rec.lease_clock is not None:
            rec.lease.check(rec.lease_clock)  # a lost lease: stop before this step's record
        if rec.log.writes_failing:
            # A known outage: don't try, and don't queue behind the executor's waiting record;
            # the run stops at this checkpoint and its work resumes from the previous one.
            rec.stopped_by_log = EventLogStop("event log cannot be written (see davitd's log)")
            raise rec.stopped_by_log
        try:
            anyio.from_thread.run(partial(rec.record, *events, patient=False), token=self._loop)
        except LOG_UNWRITABLE as exc:
            rec.stopped_by_log = EventLogStop(f"event log cannot be written: {exc}")
            raise rec.stopped_by_log from exc
        rec.stopped_by_log = None  # the work went on (it caught the stop) and the log took this

    def _lease(self) -> str | None:
        """The token of the lease held on the run, stamped on its step events (who wrote them)."""
        lease = self.recorder.lease
        return lease.token if lease is not None else None

    def cursor(self, step: str) -> dict[str, Any] | None:
        found = self.recorder.view.steps.get(step)
        return found.cursor if found else None

    def step_done(self, step: str) -> bool:
        found = self.recorder.view.steps.get(step)
        return (found is not None and found.status == "done") or self.recorder.deferred_completion(step)

    def step_started(self, step: str, *, commits: bool = False) -> None:
        self._start(step, commits)

    def step_handover(self, done: str, summary: dict[str, Any], next_step: str, *, commits: bool = False) -> None:
        # One append (one commit, one fsync) for the two events a step boundary records; both
        # are durable before the next step's work begins, exactly as when recorded apart.
        self._start(next_step, commits, ev.StepCompleted(step=done, summary=summary, lease=self._lease()))

    def _start(self, step: str, commits: bool, *before: ev.Event) -> None:
        """Record `before` (a step's completion), then `step` started: together when they can be."""
        if not commits:
            self._record(*before, ev.StepStarted(step=step, lease=self._lease()))
            return
        try:
            self.check_stop()
            self._record(*before, ev.StepStarted(step=step, commits=True, lease=self._lease()))
        except (RunStopped, IllegalTransition) as refused:
            if before:
                self._record(*before)  # what was done is recorded done, whatever stops what is next
            if isinstance(refused, IllegalTransition) and self.recorder.view.state is RunState.CANCELLING:
                # A cancel was recorded first (the stop flag may not be set yet): it wins, and the
                # step that would have made the run's result exist never runs.
                raise RunStopped(f"cancelled before {step} started") from None
            raise

    def checkpoint(
        self,
        step: str,
        cursor: dict[str, Any],
        *,
        chunks_written: Sequence[str] = (),
        bytes_done: int = 0,
        bytes_stored: int = 0,
        items_done: int = 0,
    ) -> None:
        bytes_total, items_total = self._totals.get(step, (None, None))
        self._record(
            ev.CheckpointRecorded(
                step=step,
                cursor=cursor,
                chunks_written=list(chunks_written),
                bytes_done=bytes_done,
                bytes_stored=bytes_stored,
                items_done=items_done,
                bytes_total=bytes_total,
                items_total=items_total,
                lease=self._lease(),
            )
        )

    def step_total(self, step: str, *, bytes_total: int | None = None, items_total: int | None = None) -> None:
        self._totals[step] = (bytes_total, items_total)

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        completed = ev.StepCompleted(step=step, summary=summary, lease=self._lease())
        plan = self.recorder.view.plan
        if plan and step == plan[-1]:
            # The run's last step: what follows is the executor's `RunVerifying`, which takes
            # this completion along (one commit less per run). Nothing waits on it being durable
            # before then: a crash in between redoes the step, as a crash just before this
            # event was recorded always could (every step is idempotent on resume, guarantee 8).
            self._call(self.recorder.defer, completed)
            return
        self._record(completed)

    def _call(self, fn: Callable[..., Any], *events: ev.Event) -> None:
        anyio.from_thread.run(partial(fn, *events), token=self._loop)

    def warn(self, message: str, step: str | None = None) -> None:
        self._record(ev.RunWarning(message=message, step=step))

    def check_stop(self) -> None:
        rec = self.recorder
        if rec.lease is not None and rec.lease_clock is not None:
            rec.lease.check(rec.lease_clock)  # a daemon continued after a pause past its lease stops here
        if self._stop.is_set():
            raise RunStopped(self._stop_reason())

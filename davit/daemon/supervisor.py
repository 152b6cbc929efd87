"""davitd's supervisor: start-up recovery, the jobs watcher, the scheduler, CLI requests, and
dispatching runs to the executor with bounded parallelism.

SIGHUP (`systemctl reload davit`) re-reads the config file: an invalid one is rejected with
an event naming field and reason and the daemon keeps what it had; a valid one applies to the
runs that start from then on (parallelism, retry policy, data path, repositories, log level),
and a change that needs a restart (jobs or state directory) is named in `ConfigReloaded`.

Start-up: take the state directory's lock (one daemon per log), record `DaemonStarted`, fold
every run; a run found preparing, running or verifying had no live owner, so it is recorded
`interrupted` with the reason and requeued; then the jobs directory is synced. A run that
ends (succeeded, failed, cancelled, rolled back) has what it may have left removed (helper
containers of a step a crash cut short, its staging in the repository), and so, at start-up,
has every run that ended while the previous daemon ran (it may have died before doing so); at
start-up the staging of every run the log shows as ended is removed too (staging of runs the
log does not know, another davitd's on a shared repository, is left alone). A job without
a schedule runs once per revision, and a triggered revision is in the log, so a restart never
runs it again. SIGTERM/SIGINT ask every run to stop at its next chunk boundary (left
`interrupted`, resumed at the next start) and wait for them before exiting.

A log that cannot be written (full disk, I/O error; `davit/daemon/loghealth.py`) never stops the
daemon: its appends wait with backoff, runs stop at their next checkpoint and resume when the
log takes writes again, no new run is dispatched meanwhile, and STATUS= says why. A shutdown
during such an outage waits for the log at most `LOG_SHUTDOWN_PATIENCE_SECONDS`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread
import watchfiles
from anyio.abc import TaskGroup

from davit.daemon import executor as ex
from davit.daemon.bootstrap import Parts
from davit.daemon.config import changed_fields, reload_settings
from davit.daemon.eventlogs import log_location
from davit.daemon.heartbeat import HeartbeatWriter
from davit.daemon.jobs import LOCAL_KINDS, JobRegistry, JobState
from davit.daemon.kinds import preload
from davit.daemon.leases import LEASE_LOST, ROSTER_LIVE_SECONDS, ROSTER_SECONDS, LeaseBook, LeasePolicy
from davit.daemon.loghealth import LogHealth
from davit.daemon.logsetup import apply_level as apply_log_level
from davit.daemon.notifications.service import NotificationService
from davit.daemon.notify import Notifier
from davit.daemon.recorder import RunRecorder, append_unordered, new_event_id, new_run_id
from davit.daemon.requestfail import UnknownRequest, record_failure
from davit.daemon.scheduler import Clock, ClockWatch, SystemClock, retry_delay
from davit.daemon.twins import claim_name, keep_name
from davit.domain import events as ev
from davit.domain.commands import CancelRun, CopyNow, ResumeRun, RunJobNow, decode_command
from davit.domain.daemons import DaemonBeat
from davit.domain.errors import LOG_UNWRITABLE, AlreadyCommitted, ConcurrencyError, FieldProblem, IllegalTransition, InvalidConfig
from davit.domain.jobs import job_from_dict, spec_revision
from davit.domain.jobs.copy import adhoc_copy
from davit.domain.machine import CANCELLABLE, DISPATCHABLE, RESUMABLE, TERMINAL, WORKING, RunState
from davit.domain.ports import DaemonRoster, EventLog
from davit.domain.runs import RunView, apply, fold, staging_unneeded
from davit.domain.schedule import MonotonicQueue, Timetable

log = logging.getLogger("davitd")
SHUTDOWN_GRACE_SECONDS = 60
LOG_SHUTDOWN_PATIENCE_SECONDS = 10
# The watcher reports changed paths; a reconcile that only lstat()s every job file catches what
# it missed (a file written before the watch was set up, an overflowed inotify queue).
FIRST_RECONCILE_SECONDS = 2.0
RECONCILE_SECONDS = 30.0
WATCH_RETRY_SECONDS = 5.0
MAX_SCHEDULER_SLEEP_SECONDS = 60.0  # bounded, so a wall-clock step is noticed within a minute
RETRY_FAILED_FIRE_SECONDS = 60.0
TAKEOVER_CHECK_SECONDS = 2.0  # how often lapsed leases are looked for (a takeover within lease + this)
RESTART_ONLY = frozenset(
    {"daemon.jobs_dir", "daemon.state_dir", "daemon.log_format", "metrics.listen", "metrics.allow_remote", "metrics.textfile"}
)
RESTART_ONLY |= {"daemon.event_store_url_file"}  # the log is opened once, at start (davit/daemon/eventlogs.py)
RESTART_ONLY |= {"daemon.log_key_file"}  # the log is opened with its key once, at start


class Supervisor:
    def __init__(
        self,
        parts: Parts,
        store: EventLog,
        notifier: Notifier,
        version: str,
        health: LogHealth | None = None,
        clock: Clock | None = None,
        leases: LeasePolicy | None = None,
    ) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.store = store
        self.notifier = notifier
        self.health = health  # the store's WriteOutage, when it has one
        self.version = version
        self.clock: Clock = clock or SystemClock()
        self.registry = JobRegistry(store)
        # Several daemons on one log (PostgreSQL): runs are claimed under leases, and this
        # daemon follows what the others append (runs, jobs). None: the one daemon of its log.
        self.leases = leases
        self.book = LeaseBook(leases, self.clock) if leases is not None else None
        self.name = leases.name if leases is not None else None
        self.registry.daemon_name = self.name
        self.followed_after = 0  # the log position the follow loop starts after
        self.taken_from: dict[str, str] = {}  # run id -> the daemon whose lapsed lease this one ended
        self.registry.on_change = self._job_changed
        self.timetable = Timetable()  # scheduled jobs by next fire (wall clock)
        self.retries = MonotonicQueue()  # runs waiting to retry, by monotonic due time
        self.schedule_changed = anyio.Event()
        self.kinds_changed = anyio.Event()  # a job was defined or changed: its kind may be new
        self.kinds_loaded: dict[str, anyio.Event] = {}  # kind -> set once its preload ended (see _kind_loaded)
        self.sync_lock = anyio.Lock()
        self.runs: dict[str, RunView] = {}
        parts.run_ended = self._run_ended
        self.recorders: dict[str, RunRecorder] = {}
        self.handles: dict[str, ex.RunHandle] = {}
        self.wakeup = anyio.Event()
        self.requests_after = 0
        self._unlearnt_at: int | None = None  # the request whose answerer could not be learnt (logged once)
        # runs whose cancel this daemon left to their lease owner: honoured here if this daemon
        # takes the run over (the owner died before it read the cancel)
        self.cancels_left: set[str] = set()
        # requests another daemon claimed and has not yet recorded as handled (its own
        # `RequestsHandled` past them): answered here if that daemon stops beating first
        self.claimed_elsewhere: dict[int, tuple[str, ev.StoredEvent]] = {}
        self.handled_by: dict[str, int] = {}  # daemon name -> the request position it handled up to
        self.previous_start = 0  # the log position of the previous daemon's start
        self.ended_before_start: list[str] = []
        max_parallel = self.settings.model.daemon.max_parallel_runs
        self.limiter = anyio.CapacityLimiter(max_parallel + 2)
        self.stopping = False
        self.started_at = datetime.now(UTC).isoformat()
        self.host = socket.gethostname()  # as claimed at start: the name's claim is checked against it
        # set when another daemon claimed this one's name (it was paused or cut off past
        # `ROSTER_LIVE_SECONDS`): two daemons must never bear one name, so this one stops
        self.superseded = anyio.Event()
        self._roster_failing: str | None = None
        self.heartbeat = HeartbeatWriter(self.settings.state_dir, os.getpid(), version, self.started_at)
        # messages owed (failures, recoveries, stale jobs...), derived from the log; never holds up a run
        self.notifications = NotificationService(store, lambda: self.settings, self.runs, self.registry.active, self.clock)
        if health is not None:
            health.on_outage = self.notifications.outage

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until a signal stops davitd. The caller holds the state directory's lock."""
        # Signals are received from the first step, not from when the stop is awaited: a
        # SIGTERM sent right after READY (systemd stopping a unit that just started) would
        # otherwise meet Python's default action and kill davitd without its shutdown.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            await self._run(signals)

    async def _run(self, signals: AsyncIterator[int]) -> None:
        if self.book is not None and isinstance(self.store, DaemonRoster) and self.name is not None:
            # (atomic: of two daemons of one name starting at once, one claims it; see twins.py)
            first_beat = DaemonBeat(self.name, self.version, os.getpid(), self.host, self.started_at)
            await claim_name(self.store, first_beat, str(self.settings.config_file))
        await append_unordered(
            self.store,
            ev.DAEMON_STREAM,
            ev.DaemonStarted(pid=os.getpid(), home=str(self.settings.config_file.parent), version=self.version, name=self.name),
        )
        self.followed_after = await self.store.head_position()
        await self._load()
        await self._recover()
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._sync_jobs()
        except Exception:
            # The jobs already defined run; the watcher and the reconcile try the directory again.
            log.exception("syncing the jobs directory at start-up failed; jobs defined before keep running")
        await self.heartbeat.beat(self._beat_facts)  # (before ready: a status right after it sees davitd alive)
        self.notifier.ready(self._status())
        log.info("davitd %s ready: jobs from %s, log %s", self.version, self.settings.jobs_dir, log_location(self.settings))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_jobs)
            tg.start_soon(self._preload_kinds)  # (after the watch is set up: imports take the GIL)
            tg.start_soon(self._schedule_loop)
            tg.start_soon(self._requests_loop)
            tg.start_soon(self._dispatch_loop, tg)
            tg.start_soon(self._watchdog_loop)
            tg.start_soon(self.heartbeat.beat_forever, self._beat_facts)
            tg.start_soon(self._notifications)
            tg.start_soon(self._remove_leftovers_of_ended, self.ended_before_start)
            if self.book is not None:
                tg.start_soon(self._follow_log)
                tg.start_soon(self._takeover_loop)
                tg.start_soon(self._roster_loop)
            reason = await self._wait_for_stop(signals)
            await self._shutdown(reason)
            tg.cancel_scope.cancel()

    async def _wait_for_stop(self, signals: AsyncIterator[int]) -> str:
        """Until a signal stops davitd or another daemon took its name; the reason recorded."""
        reason = "signal"
        async with anyio.create_task_group() as tg:

            async def signalled() -> None:
                await self._wait_for_signal(signals)
                tg.cancel_scope.cancel()

            async def superseded() -> None:
                nonlocal reason
                await self.superseded.wait()
                reason = "name claimed by another daemon"
                tg.cancel_scope.cancel()

            tg.start_soon(signalled)
            tg.start_soon(superseded)
        return reason

    async def _wait_for_signal(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await self._reload()
                continue
            log.info("received %s: stopping runs at their next checkpoint", signal.Signals(signum).name)
            return

    async def _reload(self) -> None:
        file = str(self.settings.config_file)
        try:
            new = reload_settings(self.settings)
        except InvalidConfig as exc:
            log.error("config not reloaded, keeping the current one: %s", exc)
            await append_unordered(
                self.store,
                ev.DAEMON_STREAM,
                ev.ConfigRejected(file=file, problems=[{"field": p.field, "reason": p.reason} for p in exc.problems]),
            )
            return
        changed = changed_fields(self.settings.model, new.model)
        needs_restart = [f for f in changed if f in RESTART_ONLY]
        # Until a restart, the directories stay those the daemon started with.
        kept = {name.split(".", 1)[1]: getattr(self.settings.model.daemon, name.split(".", 1)[1]) for name in needs_restart}
        model = new.model.model_copy(update={"daemon": new.model.daemon.model_copy(update=kept)})
        new = replace(new, model=model, jobs_dir=self.settings.jobs_dir, state_dir=self.settings.state_dir)
        self.settings = new
        self.parts.apply(new)
        self.limiter.total_tokens = new.model.daemon.max_parallel_runs + 2
        apply_log_level(new.model.daemon.log_level)
        await append_unordered(
            self.store, ev.DAEMON_STREAM, ev.ConfigReloaded(file=file, changed=changed, needs_restart=needs_restart)
        )
        log.info(
            "config reloaded from %s: %s%s",
            file,
            ", ".join(changed) or "nothing changed",
            f"; restart davitd to apply {', '.join(needs_restart)}" if needs_restart else "",
        )
        self.wakeup.set()

    async def _shutdown(self, reason: str = "signal") -> None:
        self.stopping = True
        self.notifier.stopping()
        for handle in list(self.handles.values()):
            handle.request_stop(ex.SHUTDOWN)
        failing_since: float | None = None
        with anyio.move_on_after(SHUTDOWN_GRACE_SECONDS):
            while self.handles:
                if not self.store.writes_failing:
                    failing_since = None
                elif failing_since is None:
                    failing_since = anyio.current_time()
                elif anyio.current_time() - failing_since >= LOG_SHUTDOWN_PATIENCE_SECONDS:
                    break  # runs waiting for the log are cancelled below; start-up recovery resumes them
                await anyio.sleep(0.05)
        if self.handles and self.store.writes_failing:
            log.warning(
                "the event log cannot be written: runs %s are left as the log shows them; they resume at the next start",
                ", ".join(sorted(self.handles)),
            )
        # (if the log is still failing, it was waited for above: one more short try)
        with anyio.move_on_after(1.0 if self.store.writes_failing else LOG_SHUTDOWN_PATIENCE_SECONDS) as waiting:
            await append_unordered(self.store, ev.DAEMON_STREAM, ev.DaemonStopped(reason=reason))
        if waiting.cancelled_caught:
            log.warning("davitd's stop could not be recorded: the event log cannot be written")
        log.info("davitd stopped")

    # --- state ---------------------------------------------------------------------------------

    async def _load(self) -> None:
        await self.registry.load()
        streams: dict[str, list[ev.StoredEvent]] = {}
        async for stored in self.store.iter_all(stream_prefix="run-"):
            streams.setdefault(stored.stream, []).append(stored)
        for stream, items in streams.items():
            run_id = stream.removeprefix("run-")
            try:
                self.runs[run_id] = fold(run_id, items)
            except IllegalTransition as exc:
                # A log that breaks the machine was written by something else than davitd;
                # leave that run alone rather than refuse to start every other one.
                log.error("run %s is ignored: its events do not form a legal run (%s)", run_id, exc)
        starts = []
        # Several daemons: each restarts from its own progress, not the furthest any reached
        # (another passed the requests this one had claimed and died before answering: they are
        # read again and answered now, their claims being in this daemon's name). Without
        # progress of its own: from where the others were at this name's first start (it claimed
        # nothing before), and never before progress recorded before daemons were named.
        own: int | None = None
        before_own_start = 0
        started = False
        async for stored in self.store.iter_all(stream_prefix=ev.DAEMON_STREAM):
            if stored.type == ev.RequestsHandled.type_name():
                upto = stored.data["upto_position"]
                self.requests_after = max(self.requests_after, upto)
                by = stored.data.get("daemon")
                if by is not None:
                    self.handled_by[by] = max(self.handled_by.get(by, 0), upto)
                if self.name is not None and by == self.name:
                    own = max(own or 0, upto)
                elif by is None or not started:
                    before_own_start = max(before_own_start, upto)
            elif stored.type == ev.DaemonStarted.type_name():
                starts.append(stored.position)
                started = started or (self.name is not None and stored.data.get("name") == self.name)
        if self.book is not None and started:
            self.requests_after = max(own or 0, before_own_start)
        self.previous_start = starts[-2] if len(starts) > 1 else 0

    def _run_ended(self, run_id: str) -> bool:
        """Whether this daemon's fold of the log shows `run_id` ended (a terminal state never
        changes); an unknown run, or one another daemon holds as this one last saw it, is not."""
        view = self.runs.get(run_id)
        return view is not None and view.state in TERMINAL

    def recorder(self, run_id: str) -> RunRecorder:
        if run_id not in self.recorders:
            self.recorders[run_id] = RunRecorder(self.store, self.runs[run_id])
        return self.recorders[run_id]

    async def _refold(self, run_id: str) -> RunView:
        """Fold the run again from the log (another daemon appended to it), in place of the
        view this daemon had; its recorder, if any, records on from the new one."""
        view = fold(run_id, await self.store.read_stream(ev.run_stream(run_id)))
        self.runs[run_id] = view
        if run_id in self.recorders:
            self.recorders[run_id].view = view
        return view

    async def _recover(self) -> None:
        for run_id, view in list(self.runs.items()):
            if self.book is not None and self.book.held_elsewhere(view, at_start=True):
                # another live daemon's run (or one whose lease has not been seen to lapse yet:
                # the takeover loop decides once `lease_seconds` pass without a renewal)
                self.book.observe(view)
                continue
            try:
                await self._recover_one(run_id, view)
            except ConcurrencyError:
                await self._refold(run_id)  # another daemon starting at once recovered it first
            view = self.runs[run_id]
            if view.state in TERMINAL and view.last_position > self.previous_start:
                self.ended_before_start.append(run_id)
            self._expect_retry(run_id)

    async def _recover_one(self, run_id: str, view: RunView) -> None:
        state = view.state
        if state in WORKING:
            reason = f"found {state.value} at start-up: the daemon that ran it stopped without finishing"
            await self.recorder(run_id).record(ev.RunInterrupted(reason=reason), ev.RunRequeued(reason="resumed at start-up"))
            log.warning("run %s (%s) was interrupted; resuming from its last checkpoint", run_id, view.job)
        elif state is RunState.INTERRUPTED:
            await self.recorder(run_id).record(ev.RunRequeued(reason="resumed at start-up"))
            log.info("run %s (%s) resumes from its last checkpoint", run_id, view.job)
        elif state is RunState.CANCELLING:
            # the daemon died while honouring a cancel: end it now, rolling back if needed
            await ex.settle_cancel(self.recorder(run_id), None, self.parts.work_for, self.limiter)

    async def _remove_leftovers_of_ended(self, run_ids: list[str]) -> None:
        for run_id in run_ids:  # their staging with all the others' below: one listing per repository
            await self._remove_leftovers(run_id, staging=False)
        unneeded = staging_unneeded(self.runs.values())
        try:
            removed = await anyio.to_thread.run_sync(self.parts.remove_staging_of_ended, unneeded, limiter=self.limiter)
        except Exception as exc:
            log.warning("the staging of runs that ended could not all be removed: %s", exc)
            return
        if removed:
            log.info("removed the staging of runs that had ended: %s", ", ".join(removed))

    async def _remove_leftovers(self, run_id: str, staging: bool = True) -> None:
        """Remove what an ended run left outside the repository (with `staging`, its staging and
        that of the job's runs it supersedes). A failure is a log line, not the run's: its result
        stands, and the leftovers carry its id for an operator."""
        view = self.runs.get(run_id)
        if view is None or view.state not in TERMINAL:
            return
        unneeded = staging_unneeded(v for v in self.runs.values() if v.job == view.job) if staging else set()
        try:
            removed = await anyio.to_thread.run_sync(self.parts.remove_leftovers, view, run_id in unneeded, limiter=self.limiter)
            if staging and view.state is RunState.SUCCEEDED:  # the job's earlier failed runs are superseded now
                removed += await anyio.to_thread.run_sync(
                    self.parts.remove_staging_of_ended, unneeded - {run_id}, limiter=self.limiter
                )
        except Exception as exc:
            log.warning(
                "run %s (%s) ended; what it left behind (labelled with its id) could not be removed: %s", run_id, view.job, exc
            )
            return
        if removed:
            log.info("run %s (%s) ended; removed what it left behind: %s", run_id, view.job, ", ".join(removed))

    def _status(self) -> str:
        status = f"{len(self.handles)} running, {self.registry.active_count()} jobs"
        problem = self.health.problem if self.health is not None else None
        return f"{problem}; retrying ({status})" if problem else status

    # --- jobs ----------------------------------------------------------------------------------

    async def _sync_jobs(self, names: Collection[str] | None = None) -> None:
        """Sync the named job files (as the watcher reported them), or all of them (start-up,
        reconcile: only stat()s files unchanged since they were read). One sync at a time."""
        async with self.sync_lock:
            if names is None:
                await self.registry.sync_directory(self.settings.jobs_dir)
                candidates = self.registry.active()
            else:
                defined = await self.registry.sync_paths(self.settings.jobs_dir, names)
                candidates = [j for j in map(self.registry.by_name, defined) if j is not None]
            if self.name is not None:  # (several daemons: each triggers the jobs its directory defines)
                candidates = [j for j in candidates if j.daemon in (None, self.name)]
            for job in candidates:
                if job.spec.get("schedule") is None and job.revision not in job.triggered_revisions:
                    await self.trigger(job, "new-revision")

    async def _watch_jobs(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reconcile_jobs)
            while True:
                try:
                    async for changes in watchfiles.awatch(
                        self.settings.jobs_dir, watch_filter=_is_job_file, debounce=300, step=100, recursive=False
                    ):
                        try:
                            await self._sync_jobs({os.path.basename(path) for _change, path in changes})
                        except Exception:
                            log.exception("syncing changed job files failed; the next reconcile retries")
                except Exception:
                    log.exception("watching the jobs directory failed; watching again in %.0f s", WATCH_RETRY_SECONDS)
                await anyio.sleep(WATCH_RETRY_SECONDS)

    async def _reconcile_jobs(self) -> None:
        await anyio.sleep(FIRST_RECONCILE_SECONDS)
        while True:
            try:
                await self._sync_jobs()
            except Exception:
                log.exception("reconciling the jobs directory failed; will retry")
            await anyio.sleep(RECONCILE_SECONDS)

    async def trigger(self, job: JobState, reason: str, run_id: str | None = None, scheduled_for: str | None = None) -> str:
        run_id = run_id or new_run_id()
        queued = ev.RunQueued(run_id=run_id, job=job.name, kind=job.kind, revision=job.revision, spec=job.spec, reason=reason)
        run_part = ev.StreamAppend(ev.run_stream(run_id), 0, (ev.NewEvent.of(new_event_id(), queued),))
        stored = await self.registry.append(
            job.name,
            ev.JobRunTriggered(run_id=run_id, revision=job.revision, reason=reason, scheduled_for=scheduled_for),
            extra=[run_part],
        )
        self.runs[run_id] = fold(run_id, [item for item in stored if item.stream == run_part.stream])
        log.info("run %s of job %s queued (%s)", run_id, job.name, reason)
        await self._warn_if_placed_nowhere(run_id, job)
        self.wakeup.set()
        return run_id

    async def _warn_if_placed_nowhere(self, run_id: str, job: JobState) -> None:
        """A run whose `runs_on` names a daemon that never beat on this log waits, queued, for
        one of that name: say so, or an operator sees only `queued` (a typo in `runs_on`)."""
        runs_on = job.spec.get("runs_on")
        if not runs_on or runs_on == self.name or self.name is None or not isinstance(self.store, DaemonRoster):
            return
        try:
            names = {seen.beat.name for seen in await self.store.daemons()}
        except Exception:
            return  # (only a warning: the run waits either way)
        if runs_on not in names:
            log.warning(
                "run %s of job %s waits for daemon %r (its runs_on), which has never beaten on this log: "
                "no daemon runs it until one of that name starts",
                run_id,
                job.name,
                runs_on,
            )

    # --- scheduling ----------------------------------------------------------------------------

    def _job_changed(self, job: JobState) -> None:
        """The registry applied events to `job`: plan its next fire again (O(log n))."""
        schedule = None if job.retired else job.spec.get("schedule")
        if schedule:
            self.timetable.plan(job.name, schedule, _since(job), self.clock.now())
        else:
            self.timetable.drop(job.name)
        self.schedule_changed.set()
        self.kinds_changed.set()

    async def _preload_kinds(self) -> None:
        """Import the modules of the defined jobs' kinds in a thread, each once per daemon, so
        a run neither spends its own time nor blocks the event loop importing them."""
        loaded: set[str] = set()
        while True:
            self.kinds_changed = anyio.Event()
            kinds = sorted(({job.kind for job in self.registry.active()} | set(self.kinds_loaded)) - loaded)
            for kind in kinds:
                self.kinds_loaded.setdefault(kind, anyio.Event())
            for kind in kinds:
                loaded.add(kind)
                try:
                    await anyio.to_thread.run_sync(preload, kind)
                except Exception as exc:  # the run of that kind imports it again and fails with the reason
                    log.warning("the modules of kind %s could not be imported ahead of its runs: %s", kind, exc)
                finally:
                    self.kinds_loaded[kind].set()
            await self.kinds_changed.wait()

    async def _kind_loaded(self, kind: str) -> None:
        """Wait, queued, until the preload of `kind` has ended. A daemon that has just started
        (or just met a new kind) is still importing its client library (Weaviate's takes about
        a second); the run would only wait for it behind the import lock, inside its own
        stages and holding a worker thread, so it waits here instead, before it is dispatched.
        Once a daemon has loaded a kind, its runs never wait."""
        event = self.kinds_loaded.get(kind)
        if event is None:  # a kind the preloading loop has not met yet (e.g. of a retired job's run)
            event = self.kinds_loaded[kind] = anyio.Event()
            self.kinds_changed.set()
        await event.wait()

    def _plan_all(self) -> dict[str, timedelta]:
        """Plan every scheduled job from the clock's time now; the jobs whose previous fire (or
        definition) was recorded ahead of it, with how far."""
        now = self.clock.now()
        self.timetable.clear()
        ahead: dict[str, timedelta] = {}
        for job in self.registry.active():
            schedule = job.spec.get("schedule")
            if schedule:
                lead = self.timetable.plan(job.name, schedule, _since(job), now)
                if lead is not None:
                    ahead[job.name] = lead
        return ahead

    async def _schedule_loop(self) -> None:
        """Sleep until the earliest fire or retry (at most a minute, woken early when the
        registry changes), fire what is due. Never a pass over every job or run."""
        watch = ClockWatch(self.clock)
        await self._replan(None)
        while True:
            self.schedule_changed = anyio.Event()
            step = watch.check()
            if step is not None:
                await self._replan(step)
            await self._fire_due()
            await self._retry_due()
            with anyio.move_on_after(self._seconds_to_next()):
                await self.schedule_changed.wait()

    def _seconds_to_next(self) -> float:
        wait = MAX_SCHEDULER_SLEEP_SECONDS
        due = self.timetable.next_due()
        if due is not None:
            wait = min(wait, (due - self.clock.now()).total_seconds())
        retry = self.retries.next_due()
        if retry is not None:
            wait = min(wait, retry - self.clock.monotonic())
        return max(wait, 0.0)

    async def _replan(self, step: float | None) -> None:
        """Plan all fires again; say so with `ClockMoved` if the wall clock was seen stepped
        (`step`) or fires had been recorded ahead of it."""
        ahead = self._plan_all()
        if step is None and not ahead:
            return
        now = self.clock.now()
        jobs = sorted(ahead)
        if step is not None:
            seconds = step
            detail = (
                f"the wall clock moved {_span(step)} against the monotonic clock (a step, or a suspend); "
                f"fires are planned again from {now.isoformat(timespec='seconds')}"
            )
        else:
            lead = max(ahead.values())
            seconds = -lead.total_seconds()
            detail = (
                f"{len(jobs)} job(s) had a fire or definition recorded up to {_span(lead.total_seconds())} "
                f"ahead of the clock: it was ahead, then set back; their next fires count from "
                f"{now.isoformat(timespec='seconds')}"
            )
        log.warning("clock moved: %s%s", detail, f" (jobs: {', '.join(jobs[:20])})" if jobs else "")
        try:
            await append_unordered(
                self.store, ev.DAEMON_STREAM, ev.ClockMoved(seconds=round(seconds, 3), detail=detail, jobs=jobs[:100])
            )
        except Exception:
            log.exception("the clock step could not be recorded")

    async def _fire_due(self) -> None:
        now = self.clock.now()
        for name, at in self.timetable.pop_due(now):
            job = self.registry.by_name(name)
            if job is None:
                self.timetable.drop(name)
                continue
            try:
                await self.trigger(job, "schedule", scheduled_for=at.isoformat())
            except Exception as exc:
                if isinstance(exc, ConcurrencyError) and self.book is not None:
                    # another daemon fired it first (or changed the job): the follower applies
                    # its events and the job's next fire is planned from them
                    continue
                log.exception(
                    "job %s: its scheduled run could not be queued; trying again in %.0f s", name, RETRY_FAILED_FIRE_SECONDS
                )
                self.timetable.postpone(name, now + timedelta(seconds=RETRY_FAILED_FIRE_SECONDS))

    def _expect_retry(self, run_id: str) -> None:
        """Wake for `run_id`'s retry: the wait is counted on the monotonic clock, capped by the
        retry policy (a retry_at recorded on a clock that was ahead holds nothing back)."""
        view = self.runs.get(run_id)
        if view is None or view.state is not RunState.WAITING_RETRY or not view.retry_at:
            return
        delay = retry_delay(datetime.fromisoformat(view.retry_at), self.clock.now(), self.settings.model.retry.max_seconds)
        self.retries.push(run_id, self.clock.monotonic() + delay)
        self.schedule_changed.set()

    async def _retry_due(self) -> None:
        for run_id in self.retries.pop_due(self.clock.monotonic()):
            view = self.runs.get(run_id)
            if view is None or view.state is not RunState.WAITING_RETRY or run_id in self.handles:
                continue
            try:
                await self.recorder(run_id).record(ev.RunRequeued(reason=f"retry after {view.error_type}"))
            except Exception as exc:
                if isinstance(exc, ConcurrencyError) and self.book is not None:
                    await self._refold(run_id)  # another daemon requeued it first
                    continue
                log.exception(
                    "run %s could not be requeued for its retry; trying again in %.0f s", run_id, RETRY_FAILED_FIRE_SECONDS
                )
                self.retries.push(run_id, self.clock.monotonic() + RETRY_FAILED_FIRE_SECONDS)
                continue
            self.wakeup.set()

    # --- requests from the CLI -----------------------------------------------------------------

    async def _requests_loop(self) -> None:
        unreadable_after: int | None = None  # said once per position
        while True:
            poll = self.settings.model.daemon.request_poll_seconds
            try:
                page = await self.store.read_all(self.requests_after, 200, ev.REQUESTS_STREAM)
            except Exception as exc:
                # an event whose data cannot be decoded (JSON nested deeper than this stack
                # allows, appended by a writer with a higher recursion limit): davitd stays up
                # and keeps running its jobs; the requests after it wait for an operator
                if unreadable_after != self.requests_after:
                    unreadable_after = self.requests_after
                    log.error(
                        "the requests after log position %d cannot be read (%s); they are not handled "
                        "until the event is repaired",
                        self.requests_after,
                        type(exc).__name__,
                    )
                await anyio.sleep(poll)
                continue
            unreadable_after = None
            handled = None
            for stored in page:
                if self.stopping:
                    break  # left unhandled for the next start, where a run request still runs
                if stored.stream != ev.REQUESTS_STREAM:
                    # another stream the prefix matches ("requests-x", written by something
                    # else than davit): passed over, or a page of them stalled every request
                    handled = stored.position
                    continue
                if not await self._answer(stored):
                    break  # read again at the next poll
                handled = stored.position
            if handled is not None:
                self.requests_after = handled
                handled_event = ev.RequestsHandled(upto_position=self.requests_after, daemon=self.name)
                await append_unordered(self.store, ev.DAEMON_STREAM, handled_event)
            else:
                await anyio.sleep(poll)

    async def _answer(self, stored: ev.StoredEvent) -> bool:
        """Handle the request if this daemon answers it; False if that could not be learnt
        (the log failing): it is read again later, not passed over."""
        if self.book is not None:
            try:
                if not await self._answers(stored):
                    return True  # another daemon answers it
            except Exception as exc:
                if self._unlearnt_at != stored.position:  # (said once per request, not at every poll)
                    self._unlearnt_at = stored.position
                    log.warning(
                        "request at log position %d: whether this daemon answers it could not be learnt (%s); it is read again",
                        stored.position,
                        type(exc).__name__,
                    )
                return False
        await self._answer_here(stored)
        return True

    async def _answer_here(self, stored: ev.StoredEvent) -> None:
        try:
            await self._handle_request(stored)
        except ConcurrencyError as exc:
            if self.book is None:
                await record_failure(self.store, stored, exc)
            elif exc.stream.startswith("run-"):  # another daemon of this log handled it first
                await self._refold(exc.stream.removeprefix("run-"))
        except Exception as exc:
            # recorded, so a CLI waiting on it stops waiting (a log line alone left it
            # waiting until its timeout)
            await record_failure(self.store, stored, exc)

    async def _answers(self, stored: ev.StoredEvent) -> bool:
        """With several daemons every one reads every request, but one answers it (the CLI
        waits for one outcome, and a loser's `RequestFailed` would end its wait wrongly): a
        cancel of a run another daemon holds is its lease owner's; any other request is the
        daemon's whose `RequestClaimed` lands at version 0 of the request's claim stream (a
        claim in this daemon's own name is its previous life's, which stopped before handling
        it: handling is idempotent by run id)."""
        assert self.book is not None
        try:
            command = decode_command(stored)
        except Exception:
            command = None  # the claimer records why it does not decode
        if isinstance(command, CancelRun):
            if command.run_id in self.book.own:
                return True  # held here: answered here
            known = command.run_id in self.runs or await self.store.stream_version(ev.run_stream(command.run_id)) > 0
            # who holds it now, from the log (the follower may not have applied its latest claim yet)
            if known and self.book.held_elsewhere(await self._refold(command.run_id)):
                self.cancels_left.add(command.run_id)
                return False
        name = self.book.policy.name
        stream = ev.request_claim_stream(stored.position)
        claim = ev.RequestClaimed(position=stored.position, owner=name)
        try:
            await self.store.append(stream, 0, [ev.NewEvent.of(new_event_id(), claim)])
            return True
        except ConcurrencyError:
            first = await self.store.read_stream(stream)
            owner = str(first[0].data.get("owner")) if first else ""
            if owner != name and self.handled_by.get(owner, 0) < stored.position:  # (not answered yet)
                self.claimed_elsewhere[stored.position] = (owner, stored)
            return owner == name

    async def answer_orphaned_requests(self) -> list[int]:
        """Answer the requests claimed by a daemon that no longer beats (it died after its
        claim and before handling them, and has not come back): of the daemons doing this at
        once, the one whose claim lands next on the claim stream answers (handling is idempotent
        by run id). The positions answered here."""
        if not self.claimed_elsewhere or self.book is None or not isinstance(self.store, DaemonRoster):
            return []
        alive = {seen.beat.name for seen in await self.store.daemons() if seen.age_seconds < ROSTER_LIVE_SECONDS}
        answered = []
        for position, (owner, stored) in sorted(self.claimed_elsewhere.items()):
            if owner in alive:
                continue
            stream = ev.request_claim_stream(position)
            claims = await self.store.read_stream(stream)
            last = str(claims[-1].data.get("owner")) if claims else ""
            if last != owner:  # another daemon took it first
                self.claimed_elsewhere[position] = (last, stored)
                if last == self.book.policy.name:
                    self.claimed_elsewhere.pop(position)  # (this daemon's: answered when it took it)
                continue
            claim = ev.RequestClaimed(position=position, owner=self.book.policy.name)
            try:
                await self.store.append(stream, len(claims), [ev.NewEvent.of(new_event_id(), claim)])
            except ConcurrencyError:
                continue  # seen at the next pass
            self.claimed_elsewhere.pop(position)
            log.warning("request at log position %d: daemon %s claimed it and no longer beats; answered here", position, owner)
            await self._answer_here(stored)
            answered.append(position)
        return answered

    async def _handle_request(self, stored: ev.StoredEvent) -> None:
        command = decode_command(stored)
        if command is None:
            raise UnknownRequest(stored.type, self.version)
        if isinstance(command, RunJobNow):
            if command.run_id in self.runs:
                return
            job = self.registry.by_name(command.job)
            if job is None:
                await self._reject_run(command.run_id, command.job, f"no job named {command.job!r} is defined")
            elif not self.stopping:
                await self.trigger(job, "manual", run_id=command.run_id)
        elif isinstance(command, ResumeRun):
            view = self.runs.get(command.run_id)
            if view and view.state in RESUMABLE and command.run_id not in self.handles:
                await self.recorder(command.run_id).record(ev.RunRequeued(reason="resumed by operator"))
                log.info("run %s resumed by operator", command.run_id)
                self.wakeup.set()
        elif isinstance(command, CancelRun):
            await self._cancel(command.run_id)
        elif isinstance(command, CopyNow) and command.run_id not in self.runs and not self.stopping:
            await self._queue_copy(command)

    async def _queue_copy(self, command: CopyNow) -> None:
        """Queue an ad-hoc copy: a run whose spec the request's fields make, checked like a job
        file's, and whose repositories must be configured (otherwise the request fails, and the
        CLI waiting on it says why)."""
        raw = adhoc_copy(command.source_repository, command.repository, command.jobs, command.snapshot)
        spec = job_from_dict(raw, "davit repository copy")
        unknown = [name for name in (command.source_repository, command.repository) if name not in self.settings.locations]
        if unknown:
            problems = [FieldProblem(f"repositories.{name}", "no repository of this name is configured") for name in unknown]
            raise InvalidConfig(str(self.settings.config_file), problems)
        queued = ev.RunQueued(
            run_id=command.run_id,
            job=spec.name,
            kind=spec.kind,
            revision=spec_revision(spec),
            spec=spec.model_dump(mode="json"),
            reason="manual",
        )
        await self.store.append(ev.run_stream(command.run_id), 0, [ev.NewEvent.of(new_event_id(), queued)])
        self.runs[command.run_id] = fold(command.run_id, await self.store.read_stream(ev.run_stream(command.run_id)))
        log.info("run %s (a copy from repository %s to %s) queued", command.run_id, command.source_repository, command.repository)
        self.wakeup.set()

    async def _reject_run(self, run_id: str, job: str, reason: str) -> None:
        queued = ev.RunQueued(run_id=run_id, job=job, kind="", revision="", spec={}, reason="manual")
        failed = ev.RunFailed(error=reason, error_type="InvalidJob")
        await self.store.append(
            ev.run_stream(run_id), 0, [ev.NewEvent.of(new_event_id(), queued), ev.NewEvent.of(new_event_id(), failed)]
        )
        self.runs[run_id] = fold(run_id, await self.store.read_stream(ev.run_stream(run_id)))

    async def _cancel(self, run_id: str) -> None:
        view = self.runs.get(run_id)
        # (the table alone: a cancel after the committing step started is recorded as ignored)
        if view is None or view.state not in CANCELLABLE:
            return
        if self.book is not None and self.book.held_elsewhere(view):
            return  # its owner reads the same request and honours it
        if await ex.cancel(self.recorder(run_id), self.handles.get(run_id), self.parts.work_for, self.limiter):
            self.wakeup.set()  # the dispatcher runs the rollback
        else:
            await self._remove_leftovers(run_id)  # a run nobody executed, settled as cancelled

    # --- dispatch ------------------------------------------------------------------------------

    async def _dispatch_loop(self, tg: TaskGroup) -> None:
        while True:
            max_parallel = self.settings.model.daemon.max_parallel_runs
            self.wakeup = anyio.Event()
            busy_jobs = {self.runs[r].job for r in self.handles}
            queued = sorted(
                # A run found rolling back had its rollback cut short (crash): it resumes it.
                (v for v in self.runs.values() if v.state in DISPATCHABLE and v.run_id not in self.handles),
                key=lambda v: v.last_position,
            )
            if self.book is not None:
                # runs of one job never overlap, whichever daemons run them
                busy_jobs |= {v.job for v in self.runs.values() if v.owner is not None and self.book.held_elsewhere(v)}
                queued = [v for v in queued if self._placed_here(v) and not self.book.held_elsewhere(v)]
            for view in queued:
                if len(self.handles) >= max_parallel or self.stopping or self.store.writes_failing:
                    break  # (a run started while the log cannot be written would only wait)
                if view.job in busy_jobs:
                    continue
                busy_jobs.add(view.job)
                handle = ex.RunHandle(self.recorder(view.run_id))
                self.handles[view.run_id] = handle
                tg.start_soon(self._execute, handle)
            self.notifier.status(self._status())
            with anyio.move_on_after(1.0):
                await self.wakeup.wait()

    async def _execute(self, handle: ex.RunHandle) -> None:
        run_id = handle.recorder.run_id
        try:
            await self._kind_loaded(handle.recorder.view.kind)
            if self.book is None:
                await ex.execute(handle, self.parts.work_for, self.settings.model.retry, self.limiter)
            elif await self._claim(handle) and not await self._cancelled_at_claim(handle):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._renew_forever, handle)
                    await ex.execute(handle, self.parts.work_for, self.settings.model.retry, self.limiter)
                    tg.cancel_scope.cancel()
            await self._remove_leftovers(run_id)
        finally:
            self.handles.pop(run_id, None)
            if self.book is not None:
                self.book.own.pop(run_id, None)
                handle.recorder.lease = None
                with anyio.CancelScope(shield=True):
                    await self._refold_quietly(run_id)  # what the log says now (another daemon may hold it)
            self._expect_retry(run_id)
            self.wakeup.set()

    # --- several daemons: leases, placement, following the others ------------------------------

    def _placed_here(self, view: RunView) -> bool:
        """Whether this daemon may run `view`: its job's `runs_on`, else for kinds whose data is
        on the host (files, volumes, compose projects) the daemon whose jobs directory defined
        the job; other kinds (network servers, repository copies) anywhere."""
        runs_on = view.spec.get("runs_on")
        if view.kind.split(".", 1)[0] in LOCAL_KINDS:
            # (`runs_on` never moves a job that reads a host's data to another host)
            job = self.registry.jobs.get(view.job)
            if job is not None and job.daemon is not None and job.daemon != self.name:
                return False
        return not runs_on or bool(runs_on == self.name)

    async def _claim(self, handle: ex.RunHandle) -> bool:
        """Claim the run for this daemon; False if another daemon appended to it first."""
        assert self.book is not None
        rec = handle.recorder
        view = rec.view
        taken_from = self.taken_from.pop(rec.run_id, None) or (view.owner if view.owner not in (None, self.name) else None)
        claim, lease = self.book.claim_event(view, taken_from)
        try:
            await rec.record(claim)
        except (ConcurrencyError, IllegalTransition):
            await self._refold(rec.run_id)
            log.info("run %s (%s) was claimed by another daemon first", rec.run_id, view.job)
            return False
        rec.lease = lease
        rec.lease_clock = self.clock
        self.book.own[rec.run_id] = lease
        if taken_from:
            log.warning("run %s (%s) taken over from daemon %s, whose lease expired", rec.run_id, view.job, taken_from)
        return True

    async def _cancelled_at_claim(self, handle: ex.RunHandle) -> bool:
        """A run just claimed here whose cancel this daemon left to its previous owner (who
        died, or let it go, before reading it; the daemon that requeued it may never have read
        it): cancelled now rather than resumed. True if it ended so (nothing to execute); a
        rollback the cancel needs, or a cancel refused once the committing step started
        (`CancelIgnored`), is executed as usual."""
        rec = handle.recorder
        if rec.run_id not in self.cancels_left or rec.view.state not in CANCELLABLE:
            return False
        self.cancels_left.discard(rec.run_id)
        log.warning("run %s (%s): cancelled as requested while another daemon held it", rec.run_id, rec.view.job)
        await ex.cancel(rec, None, self.parts.work_for, self.limiter)
        return rec.view.state in TERMINAL

    async def _renew_forever(self, handle: ex.RunHandle) -> None:
        assert self.leases is not None
        while True:  # (the claim just made is the first renewal)
            await anyio.sleep(self.leases.renew_seconds)
            if not await self.renew(handle):
                return

    async def renew(self, handle: ex.RunHandle) -> bool:
        """Renew the run's lease once; False once it is gone (or the run ended), and then the
        run's work is asked to stop at its next chunk boundary."""
        assert self.book is not None
        rec = handle.recorder
        lease = rec.lease
        if lease is None:
            return False
        if lease.lost is not None:
            pass  # (a worker found it lost first)
        elif self.clock.monotonic() > lease.deadline:
            lease.lost = "its lease expired before this daemon could renew it (was davitd paused?)"
        else:
            renewal, deadline = self.book.renewal(lease)
            try:
                await rec.record(renewal, patient=False)
            except ConcurrencyError:
                lease.lost = "another daemon appended to the run: it was taken over"
            except IllegalTransition:
                return False  # the run ended
            except LOG_UNWRITABLE:
                return True  # tried again at the next renewal; the deadline decides meanwhile
            else:
                lease.deadline = deadline
                return True
        if not handle.stop.is_set():
            log.warning("run %s (%s): %s; its work stops here", rec.run_id, rec.view.job, lease.lost)
            handle.request_stop(f"{LEASE_LOST}: {lease.lost}")
        return False

    async def _refold_quietly(self, run_id: str) -> None:
        try:
            await self._refold(run_id)
        except Exception as exc:
            log.warning("run %s could not be read back from the log: %s", run_id, exc)

    async def _follow_log(self) -> None:
        """Apply what the other daemons append (runs, jobs) to this daemon's views."""
        assert self.leases is not None
        while True:
            try:
                async for stored in self.store.tail(self.followed_after, None, poll_seconds=0.5):
                    await self._followed(stored)
                    self.followed_after = stored.position
            except Exception:
                log.exception("following the event log failed; following again in %.0f s", WATCH_RETRY_SECONDS)
                await anyio.sleep(WATCH_RETRY_SECONDS)

    async def _followed(self, stored: ev.StoredEvent) -> None:
        if stored.stream == ev.DAEMON_STREAM and stored.type == ev.RequestsHandled.type_name():
            # the daemon that claimed them has handled them
            by, upto = stored.data.get("daemon"), stored.data.get("upto_position", 0)
            if by is not None:
                self.handled_by[by] = max(self.handled_by.get(by, 0), upto)
            for position, (owner, _) in list(self.claimed_elsewhere.items()):
                if owner == by and position <= upto:
                    del self.claimed_elsewhere[position]
            return
        if stored.stream.startswith("job-"):
            await self.registry.follow(stored)
            return
        if not stored.stream.startswith("run-"):
            return
        run_id = stored.stream.removeprefix("run-")
        if run_id in self.handles:
            return  # executed here: its recorder keeps its view; another daemon's append fences it
        view = self.runs.get(run_id)
        if view is not None and stored.version <= view.version:
            return  # this daemon's own append, already applied
        if (view is not None and stored.version == view.version + 1) or (view is None and stored.version == 1):
            view = view or self.runs.setdefault(run_id, RunView(run_id))
            try:
                apply(view, stored)
            except IllegalTransition:
                view = await self._refold(run_id)
        else:
            view = await self._refold(run_id)
        assert self.book is not None
        self.book.observe(view)
        self._expect_retry(run_id)
        self.wakeup.set()

    async def _roster_loop(self) -> None:
        """This daemon's row among the log's daemons (`davit daemons`), every `ROSTER_SECONDS`,
        until another daemon took its name."""
        if not isinstance(self.store, DaemonRoster) or self.name is None:
            return
        while not await self._roster_pass():
            await anyio.sleep(ROSTER_SECONDS)

    async def _roster_pass(self) -> bool:
        """One beat, after checking the name is still this daemon's (`keep_name`); True when
        another daemon claimed it since: this one then writes no beat (the row is the other's
        now) and stops as for SIGTERM (`superseded`), since two daemons of one name would run
        each other's host-bound jobs (files, volumes, restores) on the wrong host."""
        assert isinstance(self.store, DaemonRoster) and self.name is not None
        running, problem = self._beat_facts()
        beat = DaemonBeat(self.name, self.version, os.getpid(), self.host, self.started_at, running, problem)
        try:
            twin = await keep_name(self.store, beat)
            if twin is not None:
                log.error(
                    "[daemon] name %r was claimed by another daemon, on %s, after this one had not beaten for %.0f s: "
                    "two daemons must not bear one name, so this one stops (its runs are the other's to take over); "
                    "give each host's davitd its own [daemon] name",
                    self.name,
                    twin,
                    ROSTER_LIVE_SECONDS,
                )
                self.superseded.set()
                return True
            await self.store.beat(beat)
            self._roster_failing = None
        except Exception as exc:
            if str(exc) != self._roster_failing:
                log.warning("this daemon's heartbeat could not be written to the log's daemons table: %s", exc)
            self._roster_failing = str(exc)
        return False

    async def _takeover_loop(self) -> None:
        """Take over the runs whose lease lapsed (their daemon died or hangs): a run cut off
        while it worked is recorded interrupted and requeued (the dispatcher claims it and it
        resumes from its checkpoints), a rollback is claimed by the dispatcher as it is; a run
        interrupted by its daemon's shutdown is requeued here, for any daemon to resume."""
        assert self.leases is not None and self.book is not None
        while True:
            await anyio.sleep(min(self.leases.renew_seconds, TAKEOVER_CHECK_SECONDS))
            if self.stopping:
                return
            await self.take_over_lapsed()
            try:
                await self.answer_orphaned_requests()
            except Exception as exc:  # (the log failing: tried again at the next pass)
                log.warning("requests claimed by daemons that no longer beat could not be answered: %s", exc)

    async def take_over_lapsed(self) -> list[str]:
        """One pass of `_takeover_loop`; the runs it recorded interrupted or requeued."""
        assert self.book is not None
        done = []
        for run_id, view in list(self.runs.items()):
            if run_id in self.handles or not self._placed_here(view):
                continue
            try:
                if view.state in WORKING and self.book.takeover_due(view):
                    owner = view.owner or "an older davitd"
                    reason = f"the lease of daemon {owner} lapsed (no renewal seen for {view.lease_seconds:.0f} s)"
                    if await self._take_over_cancelled(run_id, reason):
                        done.append(run_id)
                        self.wakeup.set()
                        continue
                    requeued = ev.RunRequeued(reason=f"taken over by {self.name}")
                    await self.recorder(run_id).record(ev.RunInterrupted(reason=reason), requeued)
                    self.taken_from[run_id] = owner  # named by this daemon's claim, if it dispatches it
                    log.warning("run %s (%s): %s; resuming it here from its last checkpoint", run_id, view.job, reason)
                elif view.state is RunState.INTERRUPTED and run_id in self.cancels_left:
                    self.cancels_left.discard(run_id)  # (cancelled rather than requeued for anyone to claim)
                    log.warning("run %s (%s): cancelled as requested while daemon %s held it", run_id, view.job, view.owner)
                    await self._cancel(run_id)
                elif view.state is RunState.INTERRUPTED:
                    await self.recorder(run_id).record(ev.RunRequeued(reason=f"resumed by {self.name}"))
                elif view.state is RunState.CANCELLING and self.book.takeover_due(view):
                    # its daemon died honouring a cancel: end it here, as a start-up would (a
                    # rollback it needs is dispatched, the lapsed lease no longer holding it)
                    log.warning("run %s (%s): the daemon cancelling it is gone; settling the cancel here", run_id, view.job)
                    await ex.settle_cancel(self.recorder(run_id), None, self.parts.work_for, self.limiter)
                else:
                    continue
            except (ConcurrencyError, IllegalTransition):
                await self._refold(run_id)  # another daemon was first
                continue
            done.append(run_id)
            if run_id in self.cancels_left:
                # its owner died before it read the operator's cancel: honoured here, not resumed
                self.cancels_left.discard(run_id)
                log.warning("run %s (%s): cancelled as requested while daemon %s held it", run_id, view.job, view.owner)
                await self._cancel(run_id)
            self.wakeup.set()
        return done

    async def _take_over_cancelled(self, run_id: str, reason: str) -> bool:
        """Take over a run whose lapsed owner never read the operator's cancel (`cancels_left`):
        interrupted and cancelling in one append, so no daemon can claim it requeued in between
        (its dispatcher would resume it and the cancel would be lost), then settled here (a
        rollback it needs is dispatched). False, having recorded nothing, if it is not such a
        run, or if its committing step started (then taken over as any run, and the cancel
        recorded as ignored)."""
        if run_id not in self.cancels_left:
            return False
        rec = self.recorder(run_id)
        try:
            await rec.record(ev.RunInterrupted(reason=reason), ev.RunCancelling(reason=ex.BY_OPERATOR))
        except AlreadyCommitted:
            return False
        self.cancels_left.discard(run_id)
        log.warning("run %s (%s): %s; cancelled as requested while it held it", run_id, rec.view.job, reason)
        if not await ex.settle_cancel(rec, None, self.parts.work_for, self.limiter):
            await self._remove_leftovers(run_id)
        return True

    def _beat_facts(self) -> tuple[list[str], str | None]:
        """What davitd's heartbeat says besides its identity: the runs it executes, and why
        the log cannot be written (if it cannot)."""
        return sorted(self.handles), self.health.problem if self.health is not None else None

    async def _notifications(self) -> None:
        try:
            await self.notifications.run()
        except Exception:  # notifications stop; the runs go on (davitd is not taken down by them)
            log.exception("notifications stopped")

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_seconds
        if not interval:
            return
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval / 2)


def _is_job_file(_change: watchfiles.Change, path: str) -> bool:
    return path.endswith(".toml")


def _since(job: JobState) -> datetime:
    """When the job's fires are counted from: its last scheduled fire, or its definition."""
    return datetime.fromisoformat(job.last_scheduled_for or job.defined_at)


def _span(seconds: float) -> str:
    sign = "back " if seconds < 0 else "forward "
    left = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if left >= size:
            return f"{sign}{left / size:.1f} {unit}"
    return f"{sign}{left:.0f} s"

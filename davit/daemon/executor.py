"""The run executor: drives one run through its machine, doing each state's work in a thread.

For each state the executor does the work, then records the event that says it was done
(`prepare` -> RunStarted, `run` -> RunVerifying, `finish` -> RunSucceeded, `rollback` ->
RunRolledBack: the table `STAGES`), in a loop with one failure path; what follows a failure
(retry, rollback, fail) is decided by `davit/domain/failures.py`. Checkpoints
inside `run` are recorded by the work itself, each after the data it describes is durable.
The entries into `preparing` and `verifying` (`RunPreparing`, `RunVerifying`: `Stage.deferred`)
go to the log with the event that records that state's work done, in one append (one commit,
one fsync): the work they announce is redone after a crash anyway, and a failure, stop or
cancel records them first, so the log reads as if each had been appended on its own.
A stop request ends the work at the next chunk boundary: a cancel ends the run `cancelled`
(or, when the work already changed something it must put back, rolls it back like a failure
and ends `rolled_back`), a daemon shutdown leaves it `interrupted` and resumable. A cancel that
comes once the run's committing step has started (a backup's `publish`) no longer applies: it
is recorded as `CancelIgnored` and the run goes on to its end, so a published snapshot is never
reported as cancelled. Every failure becomes an event.

A run whose event cannot be recorded because the log cannot be written (full disk, I/O error)
stops at that checkpoint (`EventLogStop`, whatever its work raised on the way out). It is not a
failure of the run: once the log takes writes again the run is recorded `interrupted` and
requeued, and resumes from its last recorded checkpoint. When davitd stops during such an
outage, a run is left as the log last showed it, for start-up recovery to resume.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from davit.daemon.config import RetrySection
from davit.daemon.logsetup import run_context
from davit.daemon.recorder import RunRecorder, WorkerContext
from davit.daemon.retry import retry_at
from davit.domain import events as ev
from davit.domain.errors import (
    LOG_UNWRITABLE,
    AlreadyCommitted,
    ConcurrencyError,
    DavitError,
    IllegalTransition,
    RunStopped,
    StorageFull,
)
from davit.domain.failures import after_failure
from davit.domain.machine import WORKING, RunState, Trigger
from davit.domain.ports import JobWork, ReversibleWork
from davit.domain.runs import CANCELLED_BY_OPERATOR, RunView

log = logging.getLogger("davitd.executor")

CANCEL = "cancel requested"
SHUTDOWN = "daemon stopping"
BY_OPERATOR = "requested by operator"
LOG_WRITABLE_AGAIN = "the event log can be written again"


class RunHandle:
    """A run the daemon is executing: its recorder and the flag that asks its work to stop."""

    def __init__(self, recorder: RunRecorder) -> None:
        self.recorder = recorder
        self.stop = threading.Event()
        self.stop_reason = SHUTDOWN

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop.set()


@dataclass(frozen=True)
class Stage:
    """What the executor does in one state: the work (run in a thread with the run's `JobWork`;
    None: nothing to do) and the event that records it done, built from the run's view, the
    work and what the work returned."""

    work: Callable[[JobWork, WorkerContext], Any] | None
    done: Callable[[RunView, JobWork | None, Any], ev.Event]
    # The event enters a state whose work follows and is deferred (`RunRecorder.defer`): it is
    # appended with the next event, which records that work done (or with whatever the
    # failure path records first). Not durable before then: after a crash, the run resumes
    # as if it had not been recorded, and the next state's work (`prepare`, idempotent; or
    # `finish`, which only reads, with the completion of the last step it follows) is done
    # again, as after a crash during that work.
    deferred: bool = False


def _roll_back(work: JobWork, ctx: WorkerContext) -> None:
    # A rollback in progress (this process started it, or a daemon before it died in the
    # middle): the work undoes what is not undone yet.
    if isinstance(work, ReversibleWork):
        work.rollback(ctx)


STAGES: dict[RunState, Stage] = {
    RunState.QUEUED: Stage(None, lambda view, _work, _result: ev.RunPreparing(attempt=view.attempt + 1), deferred=True),
    RunState.PREPARING: Stage(
        lambda work, ctx: work.prepare(ctx), lambda _view, work, details: ev.RunStarted(plan=_plan(work), details=details)
    ),
    RunState.RUNNING: Stage(lambda work, ctx: work.run(ctx), lambda _view, _work, _result: ev.RunVerifying(), deferred=True),
    RunState.VERIFYING: Stage(
        lambda work, ctx: work.finish(ctx),
        lambda _view, _work, summary: ev.RunSucceeded(snapshot_id=summary.get("snapshot_id"), summary=summary),
    ),
    RunState.ROLLING_BACK: Stage(_roll_back, lambda view, _work, _result: ev.RunRolledBack(cause=view.error or "rolled back")),
}
# A resumed run: its preconditions were checked and recorded on its first start (a restore's
# target is not empty now because of this very run), so `prepare` is not done again.
RESUMED = Stage(None, lambda view, _work, _result: ev.RunStarted(plan=view.plan, details=view.details))


def _plan(work: JobWork | None) -> list[str]:
    assert work is not None  # (the stage's work ran with it)
    return work.plan()


def _stage(state: RunState, view: RunView) -> Stage:
    """The stage of `state` (the run's state once its deferred events are appended)."""
    if state is RunState.PREPARING and view.plan:
        return RESUMED
    return STAGES[state]


async def execute(
    handle: RunHandle,
    work_for: Callable[[RunView], JobWork],
    retry: RetrySection,
    limiter: anyio.CapacityLimiter,
) -> None:
    """Drive the run until it ends or stops: each pass goes through the states' stages; a pass
    whose failure, stop or cancel started a rollback is followed by one that does it."""
    rec = handle.recorder
    with run_context(rec.run_id, rec.view.job, rec.view.kind):
        await _execute(handle, work_for, retry, limiter)


async def _execute(
    handle: RunHandle,
    work_for: Callable[[RunView], JobWork],
    retry: RetrySection,
    limiter: anyio.CapacityLimiter,
) -> None:
    rec = handle.recorder
    try:
        while await _drive(handle, work_for, retry, limiter):
            if handle.stop_reason == CANCEL:
                # the cancel is being honoured by this rollback; it must not stop it
                handle.stop.clear()
                handle.stop_reason = SHUTDOWN
    except ConcurrencyError as exc:
        if rec.lease is None:
            raise
        # Another daemon appended to the run (it took it over after this daemon's lease
        # lapsed): this daemon's appends are refused from now on, and its work has stopped.
        reason = rec.lease.lost or f"another daemon appended to the run ({exc})"
        rec.lease.lost = reason
        log.warning("run %s (%s): lease lost, this daemon lets the run go: %s", rec.run_id, rec.view.job, reason)
    except LOG_UNWRITABLE as exc:
        # davitd's store waits for the log instead of raising this; a store without a
        # `WriteOutage` (a tool's, a test's) raises it: the run stays as the log shows it.
        log.warning(
            "run %s (%s) is left %s in the log, which cannot be written (%s); it resumes at the next start",
            rec.run_id,
            rec.view.job,
            rec.view.state.value,
            exc,
        )


async def _drive(
    handle: RunHandle,
    work_for: Callable[[RunView], JobWork],
    retry: RetrySection,
    limiter: anyio.CapacityLimiter,
) -> bool:
    """One pass: do each state's work and record the event that says it was done, until the run
    ends, stops or fails. True if the run now rolls back (another pass does it)."""
    rec = handle.recorder
    ctx = WorkerContext(rec, handle.stop, lambda: handle.stop_reason)
    work: JobWork | None = None

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    try:
        # (a run that ended, succeeded or rolled back, has no stage: the pass is over)
        while (state := rec.ahead) in STAGES or state is RunState.CANCELLING:
            _check_stop(state, handle)
            stage = _stage(state, rec.view)
            result = None
            if stage.work is not None:
                # (in a thread: building the work may import its kind's module, see kinds.preload)
                work = work or await in_thread(work_for, rec.view)
                result = await in_thread(stage.work, work, ctx)
            done = stage.done(rec.view, work, result)
            if stage.deferred:
                await rec.defer(done)
                continue
            await rec.record(done)
            _log_end(rec)
        return False
    except LOG_UNWRITABLE:
        raise  # see `execute`
    except Exception as raw:
        if isinstance(raw, ConcurrencyError) and rec.lease is not None:
            raise  # the lease is lost: nothing more is recorded (see `_execute`)
        if rec.deferring:
            # What was done before the failure or stop is in the log before what follows it,
            # which is decided from the state it leaves (as when each was appended on its own).
            await rec.flush()
        # The one failure path. A stop (shutdown, cancel, a checkpoint the log could not take)
        # says how the run goes on, whatever the work raised on its way out of it.
        if isinstance(raw, RunStopped) or rec.stopped_by_log is not None:
            return await _stopped(rec, handle, str(rec.stopped_by_log or raw), work, work_for, limiter)
        failure = _classified(raw)
        if failure is raw and not isinstance(raw, DavitError):
            log.exception("run %s failed unexpectedly", rec.run_id)
        if rec.view.state is RunState.CANCELLING:
            # the work failed on its way out of a cancel: the cancel decides how the run ends
            return await settle_cancel(rec, work, work_for, limiter)
        return await _failed(rec, work, ctx, failure, retry, in_thread)


def _check_stop(state: RunState, handle: RunHandle) -> None:
    """`RunStopped` if the run is to stop before the work of `state`: cancelled, or asked to."""
    if state is RunState.CANCELLING or (handle.stop.is_set() and handle.stop_reason == CANCEL):
        raise RunStopped(CANCEL)
    if handle.stop.is_set():
        raise RunStopped(handle.stop_reason)


def _log_end(rec: RunRecorder) -> None:
    """Say so once the executor recorded the run's end."""
    if rec.view.state is RunState.SUCCEEDED:
        log.info("run %s (%s) succeeded", rec.run_id, rec.view.job)
    elif rec.view.state is RunState.ROLLED_BACK:
        log.warning("run %s (%s) rolled back: %s", rec.run_id, rec.view.job, rec.view.error)


def _classified(exc: Exception) -> Exception:
    """A full disk is a permanent, operator-actionable failure wherever it surfaced."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        full = StorageFull(str(exc.filename or "the repository or target"))
        full.__cause__ = exc
        return full
    return exc


async def _stopped(
    rec: RunRecorder,
    handle: RunHandle,
    reason: str,
    work: JobWork | None,
    work_for: Callable[[RunView], JobWork],
    limiter: anyio.CapacityLimiter,
) -> bool:
    """Record how a stopped run ends; True if it now rolls back (a cancel that needs one, or
    a rollback that was stopped because the log could not be written)."""
    if rec.stopped_by_log is not None:
        rec.stopped_by_log = None
        # Wait for the log to take writes again; what the work could not record lands first.
        await rec.flush()
        if not handle.stop.is_set() and rec.view.state is not RunState.CANCELLING:
            if rec.view.state is RunState.ROLLING_BACK:
                return True  # the rollback goes on where its last recorded checkpoint left it
            if rec.view.state in WORKING:
                await rec.record(ev.RunInterrupted(reason=reason), ev.RunRequeued(reason=LOG_WRITABLE_AGAIN))
                log.warning(
                    "run %s (%s) was interrupted (%s); resuming from its last checkpoint", rec.run_id, rec.view.job, reason
                )
            return False
    if rec.view.state is RunState.CANCELLING or handle.stop_reason == CANCEL:
        return await settle_cancel(rec, work, work_for, limiter)
    if rec.view.state in WORKING:
        await rec.record(ev.RunInterrupted(reason=reason))
        log.info("run %s interrupted (%s); it resumes at the next start", rec.run_id, reason)
    return False


async def cancel(
    rec: RunRecorder, handle: RunHandle | None, work_for: Callable[[RunView], JobWork], limiter: anyio.CapacityLimiter
) -> bool:
    """An operator's cancel of a run that has not ended. Recorded as `RunCancelling` and then
    honoured (the running work is asked to stop; a run nobody executes is settled here), or, if
    the run's committing step has started, recorded as `CancelIgnored` and the run goes on. The
    recorder decides under its lock, so a committing step and a cancel are ordered: whichever is
    recorded first wins. True if `RunRollingBack` was recorded (the dispatcher runs it)."""
    try:
        await rec.record(ev.RunCancelling(reason=BY_OPERATOR))
    except AlreadyCommitted as late:
        await rec.record(ev.CancelIgnored(reason=BY_OPERATOR, step=late.step, state=late.state))
        log.warning(
            "run %s (%s): cancel ignored, its %s step had started; the run goes on to its end",
            rec.run_id,
            rec.view.job,
            late.step,
        )
        return False
    except (IllegalTransition, ConcurrencyError):
        return False
    log.info("run %s cancelled by operator", rec.run_id)
    if handle is not None:
        handle.request_stop(CANCEL)
        return False
    return await settle_cancel(rec, None, work_for, limiter)


async def settle_cancel(
    rec: RunRecorder, work: JobWork | None, work_for: Callable[[RunView], JobWork], limiter: anyio.CapacityLimiter
) -> bool:
    """End a cancelled run: `cancelled`, unless its work already changed something it must put
    back (a migration that stopped its source), which is rolled back as after a failure, with
    the cause "cancelled by operator". True if `RunRollingBack` was recorded: the caller then
    has the rollback run (the supervisor's dispatcher picks up a run in `rolling_back`)."""
    if rec.view.state is not RunState.CANCELLING:
        await rec.record(ev.RunCancelling(reason=CANCEL))
    if work is None and rec.view.plan:
        try:
            work = work_for(rec.view)
        except Exception:
            log.exception("run %s: cannot build its work to tell whether the cancel needs a rollback", rec.run_id)
    if isinstance(work, ReversibleWork):
        ctx = WorkerContext(rec, threading.Event(), lambda: CANCEL)
        try:
            changed = bool(await anyio.to_thread.run_sync(work.needs_rollback, ctx, limiter=limiter))
        except Exception:
            log.exception("run %s: cannot tell whether the cancel needs a rollback; rolling back", rec.run_id)
            changed = True
        if changed:
            await rec.record(ev.RunRollingBack(cause=CANCELLED_BY_OPERATOR))
            log.warning("run %s (%s) cancelled after changing things; rolling back", rec.run_id, rec.view.job)
            return True
    await rec.record(ev.RunCancelled())
    log.info("run %s cancelled", rec.run_id)
    return False


async def _failed(
    rec: RunRecorder, work: JobWork | None, ctx: WorkerContext, exc: Exception, retry: RetrySection, in_thread: Callable[..., Any]
) -> bool:
    """Record what follows the failure `exc` of the run's work (`davit/domain/failures.py` decides):
    a retry, a rollback or the end. True if `RunRollingBack` was recorded."""
    view = rec.view
    message = str(exc) or type(exc).__name__
    error_type = type(exc).__name__
    then = after_failure(
        view.state,
        retryable=isinstance(exc, DavitError) and exc.retryable,
        attempt=view.attempt,
        max_attempts=retry.max_attempts,
        reversible=isinstance(work, ReversibleWork),
        committed=view.committed_step is not None,
    )
    if then is Trigger.ROLL_BACK and await _changed(rec, work, ctx, in_thread):
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        await rec.record(ev.RunRollingBack(cause=cause))
        log.warning("run %s (%s) failed after changing things (%s); rolling back", rec.run_id, view.job, cause)
        return True
    if view.state is RunState.ROLLING_BACK:
        await rec.record(ev.RunFailed(error=f"rollback failed: {message} (cause: {view.error})", error_type=error_type))
        log.error("run %s (%s): rollback failed: %s", rec.run_id, view.job, message)
    elif then is Trigger.WAIT_RETRY:
        when = retry_at(retry, view.attempt, datetime.now(UTC)).isoformat(timespec="seconds")
        await rec.record(ev.RunWaitingRetry(error=message, error_type=error_type, attempt=view.attempt, retry_at=when))
        log.warning("run %s: %s; retrying at %s", rec.run_id, message, when)
    else:
        await rec.record(ev.RunFailed(error=message, error_type=error_type))
        log.error("run %s (%s) failed: %s", rec.run_id, view.job, message)
    return False


async def _changed(rec: RunRecorder, work: JobWork | None, ctx: WorkerContext, in_thread: Callable[..., Any]) -> bool:
    """Whether the failed work changed something it must put back; when it cannot tell, yes."""
    assert isinstance(work, ReversibleWork)  # (`after_failure` rolls back only such work)
    try:
        return bool(await in_thread(work.needs_rollback, ctx))
    except Exception:
        log.exception("run %s: cannot tell whether a rollback is needed; rolling back", rec.run_id)
        return True

"""The executor's rollback path: a work that must put things back ends `rolled_back` with
the cause; one that changed nothing ends `failed`; a run found rolling back (the daemon died
in the middle of a rollback) resumes the rollback, skipping what was already undone. A
cancel is a cause like a failure: after changes it rolls back, before them it just cancels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from davit.daemon.config import RetrySection
from davit.daemon.executor import CANCEL, RunHandle, execute, settle_cancel
from davit.daemon.recorder import RunRecorder, new_event_id
from davit.domain import events as ev
from davit.domain.errors import PermanentError
from davit.domain.machine import RunState
from davit.domain.ports import RunContext
from davit.domain.runs import CANCELLED_BY_OPERATOR, RunView, fold
from davit.eventstore.sqlite import SqliteEventStore


class MigrationLike:
    """Changes something in its first step, then fails; its rollback has two steps."""

    def __init__(self, calls: list[str], fail_early: bool = False) -> None:
        self.calls = calls
        self.fail_early = fail_early

    def plan(self) -> list[str]:
        return ["change", "more"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        if self.fail_early:
            raise PermanentError("nothing was changed yet")
        ctx.step_started("change")
        ctx.checkpoint("change", {"changed": True})
        raise PermanentError("target refused to start")

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def needs_rollback(self, ctx: RunContext) -> bool:
        return ctx.cursor("change") is not None

    def rollback(self, ctx: RunContext) -> None:
        for step in ("undo_target", "restart_source"):
            if not ctx.step_done(step):
                ctx.step_started(step)
                self.calls.append(step)
                ctx.step_completed(step, {})


async def _run(db: Path, work: MigrationLike, events: list[ev.Event]) -> RunView:
    async with SqliteEventStore(db) as store:
        queued = ev.RunQueued(run_id="r1", job="j", kind="compose.migrate", revision="x", spec={}, reason="manual")
        await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
        rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
        if events:
            await rec.record(*events)
        await execute(RunHandle(rec), lambda _view: work, RetrySection(), anyio.CapacityLimiter(2))
        return fold("r1", await store.read_stream("run-r1"))


def test_a_failure_after_changes_ends_rolled_back_with_the_cause(tmp_path: Path) -> None:
    calls: list[str] = []
    view = anyio.run(_run, tmp_path / "log.db", MigrationLike(calls), [])
    assert view.state is RunState.ROLLED_BACK
    assert view.error is not None and "target refused to start" in view.error
    assert calls == ["undo_target", "restart_source"]


def test_a_failure_before_any_change_ends_failed_without_rollback(tmp_path: Path) -> None:
    calls: list[str] = []
    view = anyio.run(_run, tmp_path / "log.db", MigrationLike(calls, fail_early=True), [])
    assert view.state is RunState.FAILED and calls == []


def test_a_run_found_rolling_back_resumes_its_rollback(tmp_path: Path) -> None:
    calls: list[str] = []
    crashed = [
        ev.RunPreparing(),
        ev.RunStarted(plan=["change", "more"]),
        ev.RunRollingBack(cause="boom"),
        ev.StepStarted(step="undo_target"),
        ev.StepCompleted(step="undo_target"),
    ]
    view = anyio.run(_run, tmp_path / "log.db", MigrationLike(calls), crashed)
    assert view.state is RunState.ROLLED_BACK and view.error == "boom"
    assert calls == ["restart_source"]


class FailsWhileCommitting(MigrationLike):
    """Changes things, then starts its committing step (a migration's `finalize`, which removes
    the source) and fails in it, as when the target host drops the link mid-finalize."""

    def run(self, ctx: RunContext) -> None:
        ctx.step_started("change")
        ctx.checkpoint("change", {"changed": True})
        ctx.step_started("more", commits=True)
        self.calls.append("source removed")
        raise PermanentError("ssh: the target host closed the connection")


def test_a_failure_after_the_committing_step_started_fails_without_rolling_back(tmp_path: Path) -> None:
    """Before, the executor rolled such a run back: the rollback removed the target, which by then
    held the only copy of the stack whose source `finalize` had removed."""
    calls: list[str] = []
    view = anyio.run(_run, tmp_path / "log.db", FailsWhileCommitting(calls), [])
    assert view.state is RunState.FAILED
    assert view.error is not None and "closed the connection" in view.error
    assert calls == ["source removed"], "no rollback step ran"


class CancelledMigration(MigrationLike):
    """An operator cancels it while it runs, after its change (or before, with `early`)."""

    def __init__(self, calls: list[str], cancel: Any, early: bool = False) -> None:
        super().__init__(calls)
        self.cancel = cancel
        self.early = early

    def run(self, ctx: RunContext) -> None:
        if not self.early:
            ctx.step_started("change")
            ctx.checkpoint("change", {"changed": True})
        self.cancel()
        ctx.check_stop()
        raise AssertionError("the cancel was not noticed")


async def _cancelled_run(db: Path, calls: list[str], early: bool) -> RunView:
    async with SqliteEventStore(db) as store:
        queued = ev.RunQueued(run_id="r1", job="j", kind="compose.migrate", revision="x", spec={}, reason="manual")
        await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
        rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
        handle = RunHandle(rec)

        def cancel() -> None:  # what the supervisor does on `davit cancel`, from the worker thread
            anyio.from_thread.run(rec.record, ev.RunCancelling(reason="requested by operator"))
            handle.request_stop(CANCEL)

        await execute(handle, lambda _view: CancelledMigration(calls, cancel, early), RetrySection(), anyio.CapacityLimiter(2))
        return fold("r1", await store.read_stream("run-r1"))


def test_a_cancel_after_changes_rolls_back_and_says_it_was_cancelled(tmp_path: Path) -> None:
    calls: list[str] = []
    view = anyio.run(_cancelled_run, tmp_path / "log.db", calls, False)
    assert view.state is RunState.ROLLED_BACK and view.error == CANCELLED_BY_OPERATOR and view.cancelled
    assert calls == ["undo_target", "restart_source"]


def test_a_cancel_before_any_change_ends_cancelled_without_rollback(tmp_path: Path) -> None:
    calls: list[str] = []
    view = anyio.run(_cancelled_run, tmp_path / "log.db", calls, True)
    assert view.state is RunState.CANCELLED and view.cancelled and calls == []


def test_a_crash_during_a_cancel_s_rollback_resumes_the_rollback(tmp_path: Path) -> None:
    calls: list[str] = []
    crashed = [
        ev.RunPreparing(),
        ev.RunStarted(plan=["change", "more"]),
        ev.StepStarted(step="change"),
        ev.CheckpointRecorded(step="change", cursor={"changed": True}),
        ev.RunCancelling(reason="requested by operator"),
        ev.RunRollingBack(cause=CANCELLED_BY_OPERATOR),
        ev.StepStarted(step="undo_target"),
        ev.StepCompleted(step="undo_target"),
    ]
    view = anyio.run(_run, tmp_path / "log.db", MigrationLike(calls), crashed)
    assert view.state is RunState.ROLLED_BACK and view.error == CANCELLED_BY_OPERATOR
    assert calls == ["restart_source"]


def test_a_run_found_cancelling_after_changes_is_rolled_back_not_just_cancelled(tmp_path: Path) -> None:
    """The daemon died between the cancel request and its outcome; start-up settles it."""

    async def go() -> tuple[RunView, bool]:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            queued = ev.RunQueued(run_id="r1", job="j", kind="compose.migrate", revision="x", spec={}, reason="manual")
            await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
            rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
            await rec.record(
                ev.RunPreparing(),
                ev.RunStarted(plan=["change", "more"]),
                ev.StepStarted(step="change"),
                ev.CheckpointRecorded(step="change", cursor={"changed": True}),
                ev.RunCancelling(reason="requested by operator"),
            )
            rolls_back = await settle_cancel(rec, None, lambda _view: MigrationLike([]), anyio.CapacityLimiter(1))
            return rec.view, rolls_back

    view, rolls_back = anyio.run(go)
    assert rolls_back and view.state is RunState.ROLLING_BACK and view.error == CANCELLED_BY_OPERATOR

"""The executor's rollback path: a work that must put things back ends `rolled_back` with
the cause; one that changed nothing ends `failed`; a run found rolling back (the daemon died
in the middle of a rollback) resumes the rollback, skipping what was already undone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from daemon.config import RetrySection
from daemon.executor import RunHandle, execute
from daemon.recorder import RunRecorder, new_event_id
from domain import events as ev
from domain.errors import PermanentError
from domain.machine import RunState
from domain.ports import RunContext
from domain.runs import RunView, fold
from eventstore.sqlite import SqliteEventStore


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
    crashed = [ev.RunPreparing(), ev.RunStarted(plan=["change", "more"]), ev.RunRollingBack(cause="boom"),
               ev.StepStarted(step="undo_target"), ev.StepCompleted(step="undo_target")]
    view = anyio.run(_run, tmp_path / "log.db", MigrationLike(calls), crashed)
    assert view.state is RunState.ROLLED_BACK and view.error == "boom"
    assert calls == ["restart_source"]

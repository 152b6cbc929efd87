"""A cancel and a run's committing step (a backup's `publish`, a migration's `finalize`): the
first of the two to be recorded wins. A cancel that lands while the snapshot is published, or
after, is recorded as ignored and the run ends `succeeded` with its snapshot; a cancel that
lands before publish started ends the run `cancelled` and no snapshot is made. The cancel is
sent as the supervisor sends it (`executor.cancel`), from inside the work at the chosen moment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

from davit.daemon import executor as ex
from davit.daemon.config import RetrySection
from davit.daemon.recorder import RunRecorder, new_event_id
from davit.domain import events as ev
from davit.domain.machine import RunState
from davit.domain.ports import JobWork, RunContext
from davit.domain.runs import CANCELLED_BY_OPERATOR, RunView, fold
from davit.eventstore.sqlite import SqliteEventStore

Hook = Callable[[str], None]  # called with the moment's name: "stored", "publishing", "finishing"


class BackupLike:
    """Stores, then publishes its snapshot as a file (the committing step), then verifies it."""

    def __init__(self, repo: Path, hook: Hook) -> None:
        self.snapshot = repo / "snapshot"
        self.hook = hook
        self.publishes = 0

    def plan(self) -> list[str]:
        return ["store", "publish"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        if not ctx.step_done("store"):
            ctx.step_started("store")
            ctx.check_stop()
            ctx.checkpoint("store", {"last": "z"}, items_done=3)
            ctx.step_completed("store", {})
        self.hook("stored")  # no stop check follows: the cancel races the start of publish
        if not ctx.step_done("publish"):
            ctx.step_started("publish", commits=True)
            self.hook("publishing")
            self.publishes += 1
            self.snapshot.write_text("manifest")
            ctx.step_completed("publish", {"snapshot_id": "r1"})

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        self.hook("finishing")
        assert self.snapshot.exists()
        return {"snapshot_id": "r1"}


class FinalizingMigration:
    """Changes something (a rollback would undo it), then finalizes, after which it cannot."""

    def __init__(self, hook: Hook, undone: list[str]) -> None:
        self.hook = hook
        self.undone = undone
        self.finalized = False

    def plan(self) -> list[str]:
        return ["change", "finalize"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        if not ctx.step_done("change"):
            ctx.step_started("change")
            ctx.checkpoint("change", {"changed": True})
            ctx.step_completed("change", {})
        self.hook("stored")
        ctx.step_started("finalize", commits=True)
        self.hook("publishing")
        self.finalized = True
        ctx.step_completed("finalize", {})

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def needs_rollback(self, ctx: RunContext) -> bool:
        return ctx.cursor("change") is not None and not ctx.step_done("finalize")

    def rollback(self, ctx: RunContext) -> None:
        self.undone.append("restart_source")


async def _new_run(store: SqliteEventStore) -> RunRecorder:
    queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
    await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
    return RunRecorder(store, fold("r1", await store.read_stream("run-r1")))


def _run_cancelled_at(db: Path, moment: str, make: Callable[[Hook], JobWork]) -> tuple[RunView, list[str]]:
    """Execute a run whose work sends an operator's cancel when it reaches `moment`."""

    async def go() -> tuple[RunView, list[str]]:
        async with SqliteEventStore(db) as store:
            rec = await _new_run(store)
            handle = ex.RunHandle(rec)
            limiter = anyio.CapacityLimiter(2)

            def hook(now: str) -> None:
                if now == moment:
                    anyio.from_thread.run(ex.cancel, rec, handle, lambda _view: work, limiter)

            work = make(hook)
            await ex.execute(handle, lambda _view: work, RetrySection(), limiter)
            stored = await store.read_stream("run-r1")
            return fold("r1", stored), [s.type for s in stored]

    return anyio.run(go)


def test_a_cancel_that_lands_while_the_snapshot_is_published_is_ignored_and_the_backup_succeeds(tmp_path: Path) -> None:
    works: list[BackupLike] = []

    def make(hook: Hook) -> BackupLike:
        works.append(BackupLike(tmp_path, hook))
        return works[-1]

    view, types = _run_cancelled_at(tmp_path / "log.db", "publishing", make)
    assert view.state is RunState.SUCCEEDED and view.snapshot_id == "r1"
    assert works[0].snapshot.exists() and works[0].publishes == 1
    assert view.cancel_ignored == {"reason": ex.BY_OPERATOR, "step": "publish", "state": "running"}
    assert "RunCancelling" not in types
    assert types.index("CancelIgnored") < types.index("RunSucceeded")


def test_a_cancel_that_lands_while_a_published_snapshot_is_verified_is_ignored(tmp_path: Path) -> None:
    view, types = _run_cancelled_at(tmp_path / "log.db", "finishing", lambda hook: BackupLike(tmp_path, hook))
    assert view.state is RunState.SUCCEEDED and view.snapshot_id == "r1" and "RunCancelling" not in types
    assert view.cancel_ignored is not None and view.cancel_ignored["state"] == "verifying"


def test_a_cancel_that_lands_just_before_publish_starts_ends_cancelled_without_a_snapshot(tmp_path: Path) -> None:
    works: list[BackupLike] = []

    def make(hook: Hook) -> BackupLike:
        works.append(BackupLike(tmp_path, hook))
        return works[-1]

    view, types = _run_cancelled_at(tmp_path / "log.db", "stored", make)
    assert view.state is RunState.CANCELLED and view.cancelled
    assert not works[0].snapshot.exists() and works[0].publishes == 0
    assert view.steps["publish"].status == "pending" and view.committed_step is None
    assert types[-2:] == ["RunCancelling", "RunCancelled"]


def test_a_cancel_of_an_interrupted_run_that_had_started_publishing_is_ignored_and_it_resumes(tmp_path: Path) -> None:
    """After kill -9 in the middle of publish the snapshot may exist: the run must finish."""

    async def go() -> tuple[RunView, RunView]:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            rec = await _new_run(store)
            await rec.record(
                ev.RunPreparing(),
                ev.RunStarted(plan=["store", "publish"]),
                ev.StepStarted(step="store"),
                ev.StepCompleted(step="store"),
                ev.StepStarted(step="publish", commits=True),
                ev.RunInterrupted(reason="kill -9"),
            )
            work = BackupLike(tmp_path, lambda _now: None)
            limiter = anyio.CapacityLimiter(2)
            assert not await ex.cancel(rec, None, lambda _view: work, limiter)
            after_cancel = fold("r1", await store.read_stream("run-r1"))
            await rec.record(ev.RunRequeued(reason="resumed at start-up"))
            await ex.execute(ex.RunHandle(rec), lambda _view: work, RetrySection(), limiter)
            return after_cancel, fold("r1", await store.read_stream("run-r1"))

    after_cancel, end = anyio.run(go)
    assert after_cancel.state is RunState.INTERRUPTED and after_cancel.cancel_ignored is not None
    assert end.state is RunState.SUCCEEDED and (tmp_path / "snapshot").exists()


def test_a_migration_cancelled_during_finalize_succeeds_instead_of_rolling_back(tmp_path: Path) -> None:
    undone: list[str] = []
    view, _types = _run_cancelled_at(tmp_path / "log.db", "publishing", lambda hook: FinalizingMigration(hook, undone))
    assert view.state is RunState.SUCCEEDED and undone == []
    assert view.cancel_ignored is not None and view.cancel_ignored["step"] == "finalize"


def test_a_migration_cancelled_just_before_finalize_rolls_back_and_never_finalizes(tmp_path: Path) -> None:
    undone: list[str] = []
    works: list[FinalizingMigration] = []

    def make(hook: Hook) -> FinalizingMigration:
        works.append(FinalizingMigration(hook, undone))
        return works[-1]

    view, _types = _run_cancelled_at(tmp_path / "log.db", "stored", make)
    assert view.state is RunState.ROLLED_BACK and view.error == CANCELLED_BY_OPERATOR and view.cancelled
    assert undone == ["restart_source"] and not any(w.finalized for w in works)


def test_publish_does_not_start_once_a_cancel_is_recorded_even_before_the_work_is_told_to_stop(tmp_path: Path) -> None:
    """The supervisor records `RunCancelling`, then sets the stop flag: publish may try to start
    in between, and the recorder refuses it then."""

    async def go() -> tuple[RunView, BackupLike]:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            rec = await _new_run(store)

            def hook(now: str) -> None:
                if now == "stored":
                    anyio.from_thread.run(rec.record, ev.RunCancelling(reason=ex.BY_OPERATOR))

            work = BackupLike(tmp_path, hook)
            await ex.execute(ex.RunHandle(rec), lambda _view: work, RetrySection(), anyio.CapacityLimiter(2))
            return fold("r1", await store.read_stream("run-r1")), work

    view, work = anyio.run(go)
    assert view.state is RunState.CANCELLED and work.publishes == 0 and not work.snapshot.exists()

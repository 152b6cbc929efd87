"""`run_steps` (davit/adapters/steps.py), the step loop every job's `run` shares (issue 16, part 1): a
step whose completion is recorded is not done again when the run resumes, the publish step is
recorded as the one that commits the run, and a step that fails stops the loop so the steps
after it never start. Driven by the real executor over a real SQLite event log, and judged by
the events it recorded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from davit.adapters.steps import PUBLISH, Step, publish_step, run_steps, step_names
from davit.daemon import executor as ex
from davit.daemon.config import RetrySection
from davit.daemon.recorder import RunRecorder, new_event_id
from davit.domain import events as ev
from davit.domain.errors import PermanentError, RetryableError, RunStopped
from davit.domain.machine import RunState
from davit.domain.ports import RunContext
from davit.domain.runs import RunView, fold
from davit.eventstore.sqlite import SqliteEventStore
from tests.fakes import MemoryRunContext


class ServerBusy(RetryableError):
    """The peer asked us to come back later."""


class StoreCheckPublish:
    """`store` (checkpoints, then completes), `check` (fails on its first try with `failure`),
    then `publish`; counts how often each step's work ran."""

    def __init__(self, failure: Exception) -> None:
        self.failure: Exception | None = failure
        self.ran: dict[str, int] = {"store": 0, "check": 0, PUBLISH: 0}

    def steps(self) -> list[Step]:
        return [Step("store", self._store), Step("check", self._check), publish_step(self._publish)]

    def plan(self) -> list[str]:
        return step_names(self.steps())

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        run_steps(ctx, self.steps())

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {"snapshot_id": "r1"}

    def _store(self, ctx: RunContext) -> dict[str, Any]:
        self.ran["store"] += 1
        ctx.checkpoint("store", {"last": "z"}, items_done=3)
        return {"items": 3}

    def _check(self, ctx: RunContext) -> dict[str, Any]:
        self.ran["check"] += 1
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        return {"checked": True}

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        self.ran[PUBLISH] += 1
        return {"snapshot_id": "r1"}


def _execute(db: Path, work: StoreCheckPublish, attempts: int) -> tuple[RunView, list[ev.StoredEvent]]:
    """Run the work through the executor; each time it waits for a retry, requeue it at once
    (as the supervisor does when the retry is due), up to `attempts` executions."""

    async def go() -> tuple[RunView, list[ev.StoredEvent]]:
        async with SqliteEventStore(db) as store:
            queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
            await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
            rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
            retry = RetrySection(max_attempts=attempts, initial_seconds=0.01, max_seconds=0.01)
            for _ in range(attempts):
                await ex.execute(ex.RunHandle(rec), lambda _view: work, retry, anyio.CapacityLimiter(2))
                if rec.view.state is not RunState.WAITING_RETRY:
                    break
                await rec.record(ev.RunRequeued(reason="retry after ServerBusy"))
            stored = await store.read_stream("run-r1")
            return fold("r1", stored), stored

    return anyio.run(go)


def _started(stored: list[ev.StoredEvent]) -> list[tuple[str, bool]]:
    return [(s.data["step"], bool(s.data.get("commits"))) for s in stored if s.type == "StepStarted"]


def test_a_resumed_run_skips_the_steps_it_completed_and_publish_is_recorded_as_committing(tmp_path: Path) -> None:
    work = StoreCheckPublish(ServerBusy("server busy"))
    view, stored = _execute(tmp_path / "log.db", work, attempts=2)
    assert view.state is RunState.SUCCEEDED
    # `store` completed in the first attempt: the second one does not do it again
    assert work.ran == {"store": 1, "check": 2, PUBLISH: 1}
    assert _started(stored) == [("store", False), ("check", False), ("check", False), (PUBLISH, True)]
    assert [s.type for s in stored].count("StepCompleted") == 3
    assert view.committed_step == PUBLISH


def test_a_step_that_fails_stops_the_loop_and_the_steps_after_it_never_start(tmp_path: Path) -> None:
    work = StoreCheckPublish(PermanentError("the check found damage"))
    view, stored = _execute(tmp_path / "log.db", work, attempts=1)
    assert view.state is RunState.FAILED and view.error == "the check found damage"
    assert work.ran == {"store": 1, "check": 1, PUBLISH: 0}
    assert _started(stored) == [("store", False), ("check", False)]
    assert view.steps[PUBLISH].status == "pending" and view.committed_step is None


def test_with_stop_between_a_stop_request_ends_the_loop_before_the_next_step_starts() -> None:
    """A migration checks for a stop between its steps; the step after the request never runs."""
    ctx = MemoryRunContext()
    ran: list[str] = []

    def first(c: RunContext) -> dict[str, Any]:
        ran.append("first")
        ctx.stop.set()  # the operator cancels while `first` runs
        return {}

    steps = [Step("first", first), Step("second", lambda c: {"second": ran.append("second")})]
    with pytest.raises(RunStopped):
        run_steps(ctx, steps, stop_between=True)
    assert ran == ["first"] and ctx.done == {"first"}


def test_a_step_that_records_itself_is_called_once_and_covers_the_steps_it_completes() -> None:
    """A migration's export, transfer and import overlap: one work starts and completes all
    three, and the loop does not call it again for the two that follow."""
    ctx = MemoryRunContext()
    calls: list[str] = []

    def move_data(c: RunContext) -> None:
        calls.append("move")
        for name in ("export", "transfer", "import"):
            c.step_started(name)
            c.step_completed(name, {})

    run_steps(ctx, [Step(name, move_data, records_itself=True) for name in ("export", "transfer", "import")])
    assert calls == ["move"] and ctx.done == {"export", "transfer", "import"}


class CountingStore(SqliteEventStore):
    """The real store, noting the event types of each append a run's recorder makes."""

    appends: list[list[str]]

    async def append_read_back(
        self, stream: str, expected_version: int, events: Sequence[ev.NewEvent], *, patient: bool = True
    ) -> list[ev.StoredEvent]:
        self.appends.append([e.type for e in events])
        return await super().append_read_back(stream, expected_version, events, patient=patient)


def test_each_step_boundary_is_one_append_that_completes_a_step_and_starts_the_next(tmp_path: Path) -> None:
    """Fewer commits per run: `store` done and `check` started land together, and so do `check`
    done and the committing `publish` started, and the last step's completion goes with
    `RunVerifying` and `RunSucceeded` (as `RunPreparing` goes with `RunStarted`, issue 18); the
    log reads as before, event by event."""

    async def go() -> tuple[list[list[str]], list[ev.StoredEvent]]:
        async with CountingStore(tmp_path / "log.db") as store:
            store.appends = []
            queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
            await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
            rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
            work = StoreCheckPublish(ServerBusy("unused"))
            work.failure = None
            await ex.execute(ex.RunHandle(rec), lambda _view: work, RetrySection(), anyio.CapacityLimiter(2))
            return store.appends, await store.read_stream("run-r1")

    appends, stored = anyio.run(go)
    assert appends == [
        ["RunPreparing", "RunStarted"],
        ["StepStarted"],
        ["CheckpointRecorded"],
        ["StepCompleted", "StepStarted"],
        ["StepCompleted", "StepStarted"],
        ["StepCompleted", "RunVerifying", "RunSucceeded"],
    ]
    assert fold("r1", stored).state is RunState.SUCCEEDED
    assert [(s.type, s.data.get("step")) for s in stored if s.type.startswith("Step")] == [
        ("StepStarted", "store"),
        ("StepCompleted", "store"),
        ("StepStarted", "check"),
        ("StepCompleted", "check"),
        ("StepStarted", PUBLISH),
        ("StepCompleted", PUBLISH),
    ]
    assert _started(stored)[-1] == (PUBLISH, True)


def test_a_cancel_recorded_while_the_step_before_publish_runs_wins_and_that_step_is_still_recorded_done(
    tmp_path: Path,
) -> None:
    """The step boundary before a committing step is one append; a cancel recorded first refuses
    the publish's start, but the step that finished is recorded completed, and publish never runs."""

    async def go() -> tuple[RunView, StoreCheckPublish]:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
            await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
            rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
            handle = ex.RunHandle(rec)
            limiter = anyio.CapacityLimiter(2)
            work = StoreCheckPublish(ServerBusy("unused"))
            work.failure = None
            checked = work._check

            def check_then_cancel(ctx: RunContext) -> dict[str, Any]:
                # the operator's cancel is recorded, and the work is not told to stop yet
                anyio.from_thread.run(partial(rec.record, ev.RunCancelling(reason=ex.BY_OPERATOR)))
                return checked(ctx)

            work._check = check_then_cancel  # type: ignore[method-assign]
            await ex.execute(handle, lambda _view: work, RetrySection(), limiter)
            return fold("r1", await store.read_stream("run-r1")), work

    view, work = anyio.run(go)
    assert view.state is RunState.CANCELLED
    assert work.ran == {"store": 1, "check": 1, PUBLISH: 0}
    assert view.steps["check"].status == "done" and view.steps[PUBLISH].status == "pending"
    assert view.committed_step is None


def test_a_run_whose_work_fails_after_its_last_step_completed_records_that_completion_with_the_failure(
    tmp_path: Path,
) -> None:
    """The last step's completion waits for the run's next event; when that is a failure, not
    `RunVerifying`, it is still recorded, first, so the fold shows the step done."""

    class FailsAfterItsSteps(StoreCheckPublish):
        def run(self, ctx: RunContext) -> None:
            super().run(ctx)
            raise PermanentError("the work broke after its last step")

    work = FailsAfterItsSteps(ServerBusy("unused"))
    work.failure = None
    view, stored = _execute(tmp_path / "log.db", work, attempts=1)
    assert view.state is RunState.FAILED and view.error == "the work broke after its last step"
    assert view.steps[PUBLISH].status == "done" and work.ran[PUBLISH] == 1
    assert [s.type for s in stored][-2:] == ["StepCompleted", "RunFailed"]


def test_a_runs_work_is_built_off_the_event_loop_so_importing_its_kind_blocks_no_other_run(tmp_path: Path) -> None:
    """Building the work may import its kind's module and client library (Weaviate's takes about
    a second): it happens in a worker thread, never on the loop that records every run's events."""
    built_in: list[threading.Thread] = []

    def work_for(_view: RunView) -> StoreCheckPublish:
        built_in.append(threading.current_thread())
        work = StoreCheckPublish(ServerBusy("unused"))
        work.failure = None
        return work

    async def go() -> RunState:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
            await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
            rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
            await ex.execute(ex.RunHandle(rec), work_for, RetrySection(), anyio.CapacityLimiter(2))
            return rec.view.state

    assert anyio.run(go) is RunState.SUCCEEDED
    assert built_in and threading.main_thread() not in built_in

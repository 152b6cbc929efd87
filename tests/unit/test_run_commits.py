"""The fixed cost of a run in the log (issue 18): how many appends, and how many write
transactions (each one commit, one fsync of the WAL under `synchronous=FULL`), a simple run
makes, counted on the real SQLite store, so the count cannot grow back unnoticed. And what
the merged appends must not change: a failure in `prepare` or `finish` still finds the state
it failed in recorded first, and a run whose deferred entry never reached the log (davitd
killed during `prepare` or `finish`) resumes from what the log says."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from davit.daemon import executor as ex
from davit.daemon.config import RetrySection
from davit.daemon.recorder import RunRecorder, new_event_id
from davit.domain import events as ev
from davit.domain.errors import PermanentError
from davit.domain.machine import RunState
from davit.domain.ports import RunContext
from davit.domain.runs import fold
from davit.eventstore.sqlappends import Result, _Request
from davit.eventstore.sqlite import SqliteEventStore

STORE = "store"


class Counting(SqliteEventStore):
    """The real store, noting each append's event types and counting write transactions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.appends: list[list[str]] = []
        self.transactions = 0

    async def append_read_back(
        self, stream: str, expected_version: int, events: Sequence[ev.NewEvent], *, patient: bool = True
    ) -> list[ev.StoredEvent]:
        self.appends.append([e.type for e in events])
        return await super().append_read_back(stream, expected_version, events, patient=patient)

    async def _transact(self, batch: list[_Request]) -> list[Result]:
        self.transactions += 1
        return await super()._transact(batch)


class OneStep:
    """One data step (`store`) with no checkpoint; `prepare` and `finish` may fail once, and
    each counts how often it ran."""

    def __init__(self) -> None:
        self.prepare_fails: Exception | None = None
        self.finish_fails: Exception | None = None
        self.ran = {"prepare": 0, STORE: 0, "finish": 0}

    def plan(self) -> list[str]:
        return [STORE]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        self.ran["prepare"] += 1
        if self.prepare_fails is not None:
            failure, self.prepare_fails = self.prepare_fails, None
            raise failure
        return {"source": "/src"}

    def run(self, ctx: RunContext) -> None:
        if ctx.step_done(STORE):
            return
        ctx.step_started(STORE)
        self.ran[STORE] += 1
        ctx.step_completed(STORE, {"items": 1})

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        self.ran["finish"] += 1
        if self.finish_fails is not None:
            failure, self.finish_fails = self.finish_fails, None
            raise failure
        return {"snapshot_id": "r1"}


async def _queued(store: SqliteEventStore) -> RunRecorder:
    queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
    await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
    return RunRecorder(store, fold("r1", await store.read_stream("run-r1")))


async def _execute(rec: RunRecorder, work: OneStep) -> None:
    await ex.execute(ex.RunHandle(rec), lambda _view: work, RetrySection(max_attempts=1), anyio.CapacityLimiter(2))


def _types(stored: list[ev.StoredEvent]) -> list[str]:
    return [s.type for s in stored]


def test_a_one_step_run_is_three_appends_and_three_commits_after_it_was_queued(tmp_path: Path) -> None:
    """Queued -> succeeded: preparing and started in one append, the step's start in one, and
    its completion, verifying and succeeded in one; every event still in the log, in order."""

    async def go() -> tuple[list[list[str]], int, list[ev.StoredEvent]]:
        async with Counting(tmp_path / "log.db") as store:
            rec = await _queued(store)
            store.appends, store.transactions = [], 0
            await _execute(rec, OneStep())
            return store.appends, store.transactions, await store.read_stream("run-r1")

    appends, transactions, stored = anyio.run(go)
    assert appends == [
        ["RunPreparing", "RunStarted"],
        ["StepStarted"],
        ["StepCompleted", "RunVerifying", "RunSucceeded"],
    ]
    assert transactions == 3
    assert _types(stored) == [
        "RunQueued",
        "RunPreparing",
        "RunStarted",
        "StepStarted",
        "StepCompleted",
        "RunVerifying",
        "RunSucceeded",
    ]
    view = fold("r1", stored)
    assert view.state is RunState.SUCCEEDED and view.attempt == 1 and view.steps[STORE].status == "done"


@pytest.mark.parametrize(
    ("stage", "entered", "failed_in"),
    [("prepare", "RunPreparing", RunState.PREPARING), ("finish", "RunVerifying", RunState.VERIFYING)],
)
def test_a_failure_in_the_work_of_a_deferred_entry_is_recorded_after_that_entry(
    tmp_path: Path, stage: str, entered: str, failed_in: RunState
) -> None:
    """The entry (`RunPreparing`, `RunVerifying`) is appended before the failure it precedes,
    so the log and the failure policy see the state the work failed in, as before."""
    work = OneStep()
    setattr(work, f"{stage}_fails", PermanentError(f"{stage} found damage"))

    async def go() -> list[ev.StoredEvent]:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            await _execute(await _queued(store), work)
            return await store.read_stream("run-r1")

    stored = anyio.run(go)
    types = _types(stored)
    assert types[-2:] == [entered, "RunFailed"], types
    view = fold("r1", stored[:-1])
    assert view.state is failed_in
    assert fold("r1", stored).error == f"{stage} found damage"


class Crash(BaseException):
    """davitd killed -9 in the middle of the work: nothing after it is recorded."""


@pytest.mark.parametrize(
    ("stage", "left", "redone"),
    [
        ("prepare", RunState.QUEUED, {"prepare": 2, STORE: 1, "finish": 1}),
        # the last step's completion went with the deferred `RunVerifying`: the step is done
        # again (every step is idempotent on resume), as after a crash before it was recorded
        ("finish", RunState.RUNNING, {"prepare": 1, STORE: 2, "finish": 2}),
    ],
)
def test_a_run_killed_before_its_deferred_entry_reached_the_log_resumes_from_what_the_log_says(
    tmp_path: Path, stage: str, left: RunState, redone: dict[str, int]
) -> None:
    work = OneStep()
    setattr(work, f"{stage}_fails", Crash())

    async def go() -> tuple[RunState, list[ev.StoredEvent]]:
        async with SqliteEventStore(tmp_path / "log.db") as store:
            with pytest.raises(Crash):
                await _execute(await _queued(store), work)
            after_crash = fold("r1", await store.read_stream("run-r1"))
            left_by_crash = after_crash.state
            # what start-up recovery records for a run found working, then a fresh recorder
            rec = RunRecorder(store, after_crash)
            if after_crash.state is not RunState.QUEUED:
                await rec.record(ev.RunInterrupted(reason="killed"), ev.RunRequeued(reason="resumed at start-up"))
            await _execute(rec, work)
            return left_by_crash, await store.read_stream("run-r1")

    left_by_crash, stored = anyio.run(go)
    assert left_by_crash is left
    view = fold("r1", stored)
    assert view.state is RunState.SUCCEEDED and work.ran == redone
    assert _types(stored).count("RunSucceeded") == 1

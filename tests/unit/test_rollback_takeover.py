"""A daemon killed -9 while a compose migration's run was rolling back: once its lease lapses,
another daemon takes the run over and finishes the rollback (from where its checkpoints left
it), not a new migration, and only one daemon does it. At the supervisor level on the memory
store with a fake reversible kind (an e2e with real engines: several minutes), three
supervisors as in `tests/unit/test_leases.py`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio

from davit.daemon.jobs import JobState
from davit.daemon.supervisor import Supervisor
from davit.domain import events as ev
from davit.domain.machine import RunState
from davit.domain.ports import RunContext
from davit.domain.runs import RunView, fold
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_leases import LEASE, daemon, follow, handle_of, stream
from tests.unit.test_schedule import FakeClock
from tests.unit.test_supervisor_memory import NOW, RUNNING

KIND = "compose.migrate"
SPEC = {"name": "move", "kind": KIND}

UNDO = ["start-source", "remove-target"]


class FakeMigration:
    """A reversible work whose rollback undoes `UNDO` in order, one checkpoint each, skipping
    what its cursor shows undone (as compose.migrate's does)."""

    calls: list[str] = []
    lock = threading.Lock()

    def plan(self) -> list[str]:
        return ["copy", "switch"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        self._note("prepare")
        return {}

    def run(self, ctx: RunContext) -> None:
        self._note("run")

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        self._note("finish")
        return {}

    def needs_rollback(self, ctx: RunContext) -> bool:
        return True

    def rollback(self, ctx: RunContext) -> None:
        done = (ctx.cursor("rollback") or {}).get("undone", [])
        for action in UNDO:
            if action in done:
                continue
            self._note(f"undo {action}")
            done = [*done, action]
            ctx.checkpoint("rollback", {"undone": done})

    def _note(self, what: str) -> None:
        with self.lock:
            self.calls.append(what)


async def seed_rolling_back(store: MemoryEventStore, a: Supervisor) -> None:
    """Run r1 of job `move` claimed by `a`, rolling back, half of it undone; then `a` is
    killed -9 (nothing more from it)."""
    queued = ev.RunQueued(run_id="r1", job="move", kind=KIND, revision="r1", spec=SPEC, reason="schedule")
    await store.append(ev.run_stream("r1"), 0, [ev.NewEvent.of("r1-0", queued)])
    await follow(a)
    assert await a._claim(handle_of(a, "r1"))
    rec = a.recorder("r1")
    await rec.record(*RUNNING, ev.RunRollingBack(cause="switch failed: the target did not start"))
    await rec.record(ev.CheckpointRecorded(step="rollback", cursor={"undone": ["start-source"]}))
    a.handles.clear()


def ready(sup: Supervisor) -> None:
    """`sup` runs the fake kind, already loaded."""
    sup.parts.work_for = lambda _view: FakeMigration()  # type: ignore[method-assign]
    sup.kinds_loaded[KIND] = anyio.Event()
    sup.kinds_loaded[KIND].set()


def finished_once(events: list[ev.StoredEvent]) -> list[str]:
    """The claims' owners, once the rollback is checked finished once and no migration began again."""
    view: RunView = fold("r1", events)
    types = [e.type for e in events]
    assert view.state is RunState.ROLLED_BACK, types
    assert FakeMigration.calls == ["undo remove-target"]  # the rest of the rollback, once; no new migration
    after = types[types.index("RunRollingBack") :]
    assert after.count("RunRolledBack") == 1 and "RunPreparing" not in after and "RunStarted" not in after
    return [e.data["owner"] for e in events if e.type == "RunClaimed"]


def test_a_rollback_whose_daemon_died_is_finished_by_one_other_daemon_not_run_again(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        FakeMigration.calls = []
        async with (
            daemon(tmp_path, "a", store, clock) as a,
            daemon(tmp_path, "b", store, clock) as b,
            daemon(tmp_path, "c", store, clock) as c,
        ):
            await seed_rolling_back(store, a)  # (the job `move` is defined by no daemon: any may run it)
            for sup in (b, c):
                await follow(sup)
                ready(sup)
                assert sup.runs["r1"].state is RunState.ROLLING_BACK
                assert sup.book is not None and sup.book.held_elsewhere(sup.runs["r1"])  # a's lease is live
            clock.advance(LEASE + 1)
            for sup in (b, c):
                assert await sup.take_over_lapsed() == []  # a rollback is not requeued: the dispatcher claims it as it is
                assert sup.book is not None and not sup.book.held_elsewhere(sup.runs["r1"])
            # both dispatch it at once (what their dispatch loops do with a dispatchable run)
            async with anyio.create_task_group() as tg:
                for sup in (b, c):
                    tg.start_soon(sup._execute, handle_of(sup, "r1"))
            claims = finished_once(await stream(store, "r1"))
            assert len(claims) == 2 and claims[0] == "a" and claims[1] in ("b", "c")  # one taker

    anyio.run(main)


def test_a_rollback_of_a_job_its_dead_daemon_defined_is_left_to_that_daemon_and_finished_at_its_restart(
    tmp_path: Path,
) -> None:
    """compose.migrate reads the defining host's engine and files: b and c leave the lapsed run
    alone (placement), and `a`, restarted after its kill -9, finishes the rollback at once."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        FakeMigration.calls = []
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            await seed_rolling_back(store, a)
            await follow(b)
            b.registry.jobs["move"] = JobState("move", kind=KIND, retired=False, daemon="a")
            ready(b)
            clock.advance(LEASE + 1)
            assert await b.take_over_lapsed() == []
            assert b.book is not None and not b.book.held_elsewhere(b.runs["r1"]) and not b._placed_here(b.runs["r1"])
        async with daemon(tmp_path, "a", store, clock) as again:  # a restarted (its previous life's lease)
            again.registry.jobs["move"] = JobState("move", kind=KIND, retired=False, daemon="a")
            ready(again)
            await again._recover()
            assert again.book is not None and not again.book.held_elsewhere(again.runs["r1"])
            await again._execute(handle_of(again, "r1"))
            assert finished_once(await stream(store, "r1")) == ["a", "a"]

    anyio.run(main)

"""A cancel of a run whose owner (a third daemon) died before it read the cancel: every other
daemon leaves the cancel to the owner (`cancels_left`); whichever takes the run over must end
it cancelled, even when another daemon's dispatcher is quick to claim a run it sees requeued.
Three supervisors on the memory store (`tests/unit/test_leases.py`'s harness)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from davit.daemon.cli.requests import send
from davit.domain import events as ev
from davit.domain.commands import CancelRun
from davit.domain.machine import DISPATCHABLE, RunState
from davit.domain.runs import fold
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_leases import LEASE, daemon, follow, handle_of, handle_requests, stream
from tests.unit.test_schedule import FakeClock
from tests.unit.test_supervisor_memory import NOW, RUNNING, seed_run, types


class HookedStore(MemoryEventStore):
    """Calls `after` once the first time an append to a run stream holding `RunInterrupted` lands."""

    def __init__(self) -> None:
        super().__init__()
        self.after: Callable[[], Awaitable[None]] | None = None

    async def append_atomic_read_back(self, parts: Sequence[ev.StreamAppend], *, patient: bool = True) -> list[ev.StoredEvent]:
        stored = await super().append_atomic_read_back(parts, patient=patient)
        if self.after is not None and any(e.type == "RunInterrupted" for p in parts for e in p.events):
            after, self.after = self.after, None
            await after()
        return stored


def test_a_cancel_left_to_a_dead_owner_is_honoured_by_the_daemon_taking_the_run_over(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = HookedStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with (
            daemon(tmp_path, "a", store, clock) as a,
            daemon(tmp_path, "b", store, clock) as b,
            daemon(tmp_path, "c", store, clock) as c,
        ):
            assert await a._claim(handle_of(a, "r1"))
            await a.recorder("r1").record(*RUNNING)
            await follow(b)
            await follow(c)
            # a dies (it never reads the cancel); b and c read it and leave it to a
            await send(store, CancelRun(run_id="r1"))
            await handle_requests(b, c)
            assert "r1" in b.cancels_left and "r1" in c.cancels_left
            assert "RunCancelling" not in await types(store, "r1")
            clock.advance(LEASE + 1)

            async def b_dispatches() -> None:
                # b's follower sees c's takeover and its dispatcher claims the run if it may
                await follow(b)
                view = b.runs["r1"]
                assert b.book is not None
                if view.state in DISPATCHABLE and not b.book.held_elsewhere(view) and await b._claim(handle_of(b, "r1")):
                    b.handles.pop("r1")  # (its executor would run it from here)

            store.after = b_dispatches
            assert await c.take_over_lapsed() == ["r1"]
            await follow(b)
            assert await b.take_over_lapsed() == []
            final = fold("r1", await stream(store, "r1"))
            assert final.state is RunState.CANCELLED, await types(store, "r1")
            assert (await types(store, "r1")).count("RunCancelling") == 1

    anyio.run(main)


def test_a_cancel_left_to_an_owner_is_honoured_by_a_daemon_claiming_the_run_another_requeued(tmp_path: Path) -> None:
    """c requeued the run without having read the cancel (it started after it); b, which left
    the cancel to the dead owner, claims the requeued run: it cancels it instead of running it."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            assert await a._claim(handle_of(a, "r1"))
            await a.recorder("r1").record(*RUNNING)
            await follow(b)
            await send(store, CancelRun(run_id="r1"))
            await handle_requests(b)
            assert "r1" in b.cancels_left
            clock.advance(LEASE + 1)
            async with daemon(tmp_path, "c", store, clock) as c:  # starts now: the cancel was read before
                assert "r1" not in c.cancels_left
                c.book.observe(c.runs["r1"])  # type: ignore[union-attr]
                clock.advance(LEASE + 1)
                assert await c.take_over_lapsed() == ["r1"]
            await follow(b)
            assert b.runs["r1"].state is RunState.QUEUED
            handle = handle_of(b, "r1")
            assert await b._claim(handle)
            assert await b._cancelled_at_claim(handle)
            assert fold("r1", await stream(store, "r1")).state is RunState.CANCELLED
            assert "r1" not in b.cancels_left

    anyio.run(main)

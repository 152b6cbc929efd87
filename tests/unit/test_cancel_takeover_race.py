"""A cancel left to a dead owner, honoured by the daemon taking the run over
(`Supervisor._take_over_cancelled`): it records the run interrupted and cancelling in one
append, unleased, and settles it. Another daemon's takeover pass in between must leave that
settling alone, not take it for a cancel whose daemon is gone and settle it too (two
`needs_rollback` probes of one migration at once, a false "the daemon cancelling it is gone",
the taker's own settle refused)."""

from __future__ import annotations

from pathlib import Path

import anyio

from davit.daemon.cli.requests import send
from davit.domain import events as ev
from davit.domain.commands import CancelRun
from davit.domain.machine import RunState
from davit.domain.runs import fold
from tests.unit.test_cancel_takeover import HookedStore
from tests.unit.test_leases import LEASE, daemon, follow, handle_of, handle_requests, stream
from tests.unit.test_schedule import FakeClock
from tests.unit.test_supervisor_memory import NOW, RUNNING, seed_run, types


def test_a_daemon_leaves_alone_the_cancel_another_is_settling_after_its_takeover(tmp_path: Path) -> None:
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
            await send(store, CancelRun(run_id="r1"))  # a dies before it reads it
            await handle_requests(b, c)
            clock.advance(LEASE + 1)
            b_took: list[list[str]] = []

            async def b_passes() -> None:  # right after c's interrupted+cancelling landed
                await follow(b)
                assert b.runs["r1"].state is RunState.CANCELLING
                b_took.append(await b.take_over_lapsed())

            store.after = b_passes
            assert await c.take_over_lapsed() == ["r1"]  # c settled it
            assert b_took == [[]]
            assert fold("r1", await stream(store, "r1")).state is RunState.CANCELLED
            assert (await types(store, "r1")).count("RunCancelled") == 1

    anyio.run(main)


def test_a_cancel_whose_taker_died_while_settling_it_is_settled_by_another_after_a_lease(tmp_path: Path) -> None:
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
            await send(store, CancelRun(run_id="r1"))
            await handle_requests(b, c)
            clock.advance(LEASE + 1)
            # c took it over and died before settling: what it appended, and nothing more
            await c.recorder("r1").record(ev.RunInterrupted(reason="lapsed"), ev.RunCancelling(reason="cancelled by operator"))
            await follow(b)
            assert await b.take_over_lapsed() == []  # c may be settling it
            clock.advance(LEASE + 1)
            assert await b.take_over_lapsed() == ["r1"]
            assert fold("r1", await stream(store, "r1")).state is RunState.CANCELLED

    anyio.run(main)

"""Adversary tests of who answers a CLI request with several daemons on one log (issue 22):
a daemon that claimed a request, or held the run a cancel names, and died before answering.
On the in-memory store with an injected clock (see tests/unit/test_leases.py)."""

from __future__ import annotations

from pathlib import Path

import anyio

from davit.daemon.cli.requests import send
from davit.daemon.recorder import append_unordered
from davit.domain import events as ev
from davit.domain.commands import CancelRun, RunJobNow
from davit.domain.daemons import DaemonBeat
from davit.domain.machine import RunState
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_leases import LEASE, daemon, follow, handle_of, handle_requests
from tests.unit.test_schedule import FakeClock
from tests.unit.test_supervisor_memory import NOW, RUNNING, seed_run, types


def test_a_request_claimed_by_a_daemon_that_died_before_answering_is_answered_by_its_restart(tmp_path: Path) -> None:
    """`a` claims a run request (its `RequestClaimed` lands) and is killed -9 before it handles
    it; `b` leaves the request to `a` and records its `RequestsHandled` past it. `a` restarted
    took the log's highest `RequestsHandled` (b's) as its own: it never read the request again,
    so the run was never queued and the CLI waited until its timeout."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        for name in ("a", "b"):  # what each one's `run` records before it loads the log
            await append_unordered(store, ev.DAEMON_STREAM, ev.DaemonStarted(pid=1, home=name, version="test", name=name))
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            position = await send(store, RunJobNow(job="weekly", run_id="r9"))
            (stored,) = [e for e in await store.read_all(0, 100, ev.REQUESTS_STREAM) if e.position == position]
            assert await a._answers(stored)  # a's claim lands; a dies here (kill -9)
            await handle_requests(b)
            assert b.requests_after == position  # b passed it: a's to answer
            assert await types(store, "r9") == []
        await append_unordered(store, ev.DAEMON_STREAM, ev.DaemonStarted(pid=2, home="a", version="test", name="a"))
        async with daemon(tmp_path, "a", store, clock) as restarted:
            await handle_requests(restarted)
            assert await types(store, "r9") == ["RunQueued", "RunFailed"]  # (no job named weekly)

    anyio.run(main)


def test_a_cancel_left_to_a_lease_owner_that_died_is_honoured_by_the_daemon_taking_the_run_over(tmp_path: Path) -> None:
    """`b` holds run r1; `a` reads a cancel of r1 and leaves it to `b`, which dies before it
    reads it (and never comes back). `a` takes the lapsed run over: it requeued the run and ran
    it to its end, the operator's cancel lost."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            assert await b._claim(handle_of(b, "r1"))
            await b.recorder("r1").record(*RUNNING)
            await follow(a)
            await send(store, CancelRun(run_id="r1"))
            await handle_requests(a)  # left to b; b dies now
            assert "RunCancelling" not in await types(store, "r1")
            clock.advance(LEASE + 1)
            await follow(a)
            assert await a.take_over_lapsed() == ["r1"]
            assert a.runs["r1"].state not in (RunState.QUEUED, RunState.RUNNING), await types(store, "r1")
            assert a.runs["r1"].state in (RunState.CANCELLED, RunState.CANCELLING), await types(store, "r1")

    anyio.run(main)


def test_a_request_claimed_by_a_daemon_that_never_comes_back_is_answered_by_another(tmp_path: Path) -> None:
    """`a` claims a run request and dies for good (renamed, its host gone): `b` left the
    request to `a` and nobody ever answered it. Once `a` no longer beats, `b` claims it next
    on its claim stream and answers it; while `a` beats, it is left to `a`."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            position = await send(store, RunJobNow(job="weekly", run_id="r9"))
            (stored,) = [e for e in await store.read_all(0, 100, ev.REQUESTS_STREAM) if e.position == position]
            assert await a._answers(stored)  # a's claim lands; a dies here
            await handle_requests(b)
            await store.beat(DaemonBeat("a", "test", 1, "host-a", "2026-01-01T00:00:00+00:00"))
            assert await b.answer_orphaned_requests() == []  # a beats: its to answer
            assert await types(store, "r9") == []
            store._beats.pop("a")  # (its beat is old: the memory store ages rows by its own clock)
            assert await b.answer_orphaned_requests() == [position]
            assert await types(store, "r9") == ["RunQueued", "RunFailed"]
            claims = await store.read_stream(ev.request_claim_stream(position))
            assert [c.data["owner"] for c in claims] == ["a", "b"]
            assert await b.answer_orphaned_requests() == []  # once

    anyio.run(main)


def test_a_request_whose_claim_stream_was_crafted_for_a_daemon_that_does_not_exist_is_answered(tmp_path: Path) -> None:
    """Something else than davit wrote `request-N` first (a claim by `ghost`): every daemon left
    the request to `ghost`, for ever."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            position = await send(store, RunJobNow(job="weekly", run_id="r9"))
            crafted = ev.RequestClaimed(position=position, owner="ghost")
            await store.append(ev.request_claim_stream(position), 0, [ev.NewEvent.of("x1", crafted)])
            await handle_requests(a, b)
            assert await types(store, "r9") == []
            answered = [await a.answer_orphaned_requests(), await b.answer_orphaned_requests()]
            assert sorted(answered) == [[], [position]]
            assert await types(store, "r9") == ["RunQueued", "RunFailed"]

    anyio.run(main)


def test_a_request_its_claimer_handled_is_not_answered_again_when_the_claimer_stops_beating(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            position = await send(store, CancelRun(run_id="nothing"))
            (stored,) = [e for e in await store.read_all(0, 100, ev.REQUESTS_STREAM) if e.position == position]
            assert await a._answers(stored)
            await handle_requests(b)
            assert position in b.claimed_elsewhere
            await handle_requests(a)  # a answers it and records its progress past it
            await follow(b)
            assert b.claimed_elsewhere == {}
            assert await b.answer_orphaned_requests() == []

    anyio.run(main)


def test_a_restarted_daemon_reading_requests_again_does_not_answer_those_a_gone_daemon_answered(tmp_path: Path) -> None:
    """`b` stops; `a` claims and answers a resume request, records its progress past it, and is
    gone for good. `b` restarted reads the request again (from its own progress): it must not
    take `a`'s claim for an unanswered one and resume the run a second time."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        for name in ("a", "b"):
            await append_unordered(store, ev.DAEMON_STREAM, ev.DaemonStarted(pid=1, home=name, version="test", name=name))
        async with daemon(tmp_path, "b", store, clock) as b:
            await send(store, CancelRun(run_id="nothing"))
            await handle_requests(b)  # b has progress of its own, then stops
        async with daemon(tmp_path, "a", store, clock) as a:
            position = await send(store, RunJobNow(job="weekly", run_id="r9"))
            await handle_requests(a)
            assert await types(store, "r9") == ["RunQueued", "RunFailed"]
        async with daemon(tmp_path, "b", store, clock) as restarted:
            await handle_requests(restarted)
            assert position not in restarted.claimed_elsewhere
            assert await restarted.answer_orphaned_requests() == []

    anyio.run(main)

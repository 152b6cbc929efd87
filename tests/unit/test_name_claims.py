"""The claim of a `[daemon] name` at start (`davit/daemon/twins.py`, `claim_name`): of two
daemons of one name starting at the same moment (neither has beaten yet) exactly one starts and
the other is refused naming it; a claim of this daemon's previous life, or of a daemon whose
row went stale, does not hold the name; a claim never followed by a beat holds it for
`ROSTER_LIVE_SECONDS` only."""

from __future__ import annotations

import anyio
import pytest

from davit.daemon.leases import ROSTER_LIVE_SECONDS
from davit.daemon.twins import claim_name, keep_name
from davit.domain import events as ev
from davit.domain.daemons import DaemonBeat
from davit.domain.errors import DaemonNameInUse
from davit.eventstore.memory import MemoryEventStore

ALIVE = {101, 202}


def beat(pid: int, host: str = "host-one") -> DaemonBeat:
    return DaemonBeat("a", "1", pid, host, "2026-01-01T00:00:00+00:00")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.sleep(0)  # (the other start gets its turn)


def test_of_two_starts_at_once_exactly_one_claims_the_name_and_the_other_names_it() -> None:
    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        outcomes: dict[int, BaseException | None] = {}

        async def start(pid: int) -> None:
            try:
                await claim_name(store, beat(pid), f"/home-{pid}/davit.toml", ALIVE.__contains__, clock.sleep, clock.monotonic)
                outcomes[pid] = None
            except DaemonNameInUse as exc:
                outcomes[pid] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(start, 101)
            tg.start_soon(start, 202)
        started = [pid for pid, out in outcomes.items() if out is None]
        assert len(started) == 1, outcomes
        (refused,) = [out for out in outcomes.values() if out is not None]
        assert f"(pid {started[0]})" in str(refused) and "host-one" in str(refused)
        claims = await store.read_stream(ev.name_stream("a"))
        assert [(c.type, c.data["pid"]) for c in claims] == [("NameClaimed", started[0])]

    anyio.run(main)


def test_a_claim_whose_daemon_never_beat_holds_the_name_for_the_live_window_only() -> None:
    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        await store.append(ev.name_stream("a"), 0, [ev.NewEvent.of("e1", ev.NameClaimed(name="a", host="host-two", pid=7))])
        await claim_name(store, beat(101), "/h/davit.toml", ALIVE.__contains__, clock.sleep, clock.monotonic)
        assert ROSTER_LIVE_SECONDS <= clock.now < ROSTER_LIVE_SECONDS + 1  # it waited for host-two's first beat
        assert [s.beat.pid for s in await store.daemons()] == [101]  # its first beat written with the claim

    anyio.run(main)


@pytest.mark.parametrize(
    "previous",
    [
        ev.NameClaimed(name="a", host="host-one", pid=999),  # this host, its process gone (killed -9)
        ev.NameClaimed(name="a", host="host-one", pid=101),  # this very pid (a container restarted)
    ],
)
def test_a_previous_lifes_claim_does_not_hold_the_name(previous: ev.NameClaimed) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        await store.append(ev.name_stream("a"), 0, [ev.NewEvent.of("e1", previous)])
        await claim_name(store, beat(101), "/h/davit.toml", ALIVE.__contains__, clock.sleep, clock.monotonic)
        assert clock.now == 0.0  # no wait
        assert await store.stream_version(ev.name_stream("a")) == 2

    anyio.run(main)


def test_a_live_daemon_of_the_name_on_another_host_refuses_the_start() -> None:
    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        await claim_name(store, beat(202, "host-two"), "/h2/davit.toml", ALIVE.__contains__, clock.sleep, clock.monotonic)
        with pytest.raises(DaemonNameInUse, match=r"host 'host-two' \(pid 202\)"):
            await claim_name(store, beat(101), "/h/davit.toml", ALIVE.__contains__, clock.sleep, clock.monotonic)
        assert await store.stream_version(ev.name_stream("a")) == 1

    anyio.run(main)


def test_a_name_forgotten_under_a_live_daemon_is_claimed_again_and_a_later_claimer_is_named() -> None:
    """`davit daemons forget` run while the daemon was paused: continued, it claims its name
    again at its next beat (so `davit daemons` lists it). A claim by another daemon since (it
    found this one silent) is named, not overwritten."""
    from davit.daemon.cli.daemons import forgotten

    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        await claim_name(store, beat(101), "/h/davit.toml", ALIVE.__contains__, clock.sleep, clock.monotonic)
        assert await keep_name(store, beat(101)) is None
        assert await store.stream_version(ev.name_stream("a")) == 1  # nothing appended at each beat
        await store.append(ev.name_stream("a"), 1, [ev.NewEvent.of("f1", ev.NameForgotten(name="a"))])
        assert await forgotten(store, "a")  # type: ignore[arg-type]
        assert await keep_name(store, beat(101)) is None
        assert not await forgotten(store, "a")  # type: ignore[arg-type]
        other = ev.NameClaimed(name="a", host="host-two", pid=7)
        await store.append(ev.name_stream("a"), 3, [ev.NewEvent.of("c2", other)])
        assert await keep_name(store, beat(101)) == "host 'host-two' (pid 7)"
        assert await store.stream_version(ev.name_stream("a")) == 4

    anyio.run(main)

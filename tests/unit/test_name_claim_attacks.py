"""Attacks on the `[daemon] name` claim (`davit/daemon/twins.py`) and on `davit daemons forget`
racing it, on the memory store: races the first tests (`test_name_claims.py`) left open."""

from __future__ import annotations

import time

import anyio
import pytest

from davit.daemon.twins import claim_name, keep_name
from davit.domain import events as ev
from davit.domain.daemons import DaemonBeat, DaemonSeen
from davit.domain.errors import DaemonNameInUse, InvalidArgument
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_name_claims import Clock


def test_a_container_restarted_under_its_pid_and_a_start_elsewhere_do_not_both_claim_the_name() -> None:
    """A daemon in a container (pid 1, the container's host name kept across `docker restart`)
    left a stale row; restarted, it claims the name and is about to beat when a daemon of the
    same name starts on another host. Its claim matches the stale row's host and pid, which
    must not make the claim look like one whose daemon "beat and stopped beating": else both
    start."""

    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        old = DaemonBeat("a", "1", 1, "box-c2", "2026-01-01T00:00:00.000001+00:00")
        await store.beat(old)
        store._beats["a"] = (old, "2026-01-01T00:00:00+00:00", -1000.0)  # (beat long ago: stale)
        restarted = DaemonBeat("a", "1", 1, "box-c2", "2026-01-01T01:00:00.000002+00:00")
        claim = ev.NameClaimed(name="a", host="box-c2", pid=1, started_at=restarted.started_at)
        await store.append(ev.name_stream("a"), 0, [ev.NewEvent.of("c1", claim)])  # its first beat not yet written

        async def restarted_beats() -> None:
            await anyio.sleep(0)
            await store.beat(restarted)  # (right after its claim, as `claim_name` does)

        other = DaemonBeat("a", "1", 4242, "box-c3", "2026-01-01T01:00:00.000003+00:00")
        refused: list[DaemonNameInUse] = []

        async def other_starts() -> None:
            try:
                await claim_name(store, other, "/c3/davit.toml", lambda pid: True, clock.sleep, clock.monotonic)
            except DaemonNameInUse as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_starts)
            tg.start_soon(restarted_beats)
        assert refused and "box-c2" in str(refused[0]), [e.data for e in await store.read_stream(ev.name_stream("a"))]
        assert [e.data["host"] for e in await store.read_stream(ev.name_stream("a"))] == ["box-c2"]

    anyio.run(main)


class StartsDuringForget(MemoryEventStore):
    """A daemon of the forgotten name claims it and beats right after `forget` looked at the
    heartbeat rows (and found none live)."""

    def __init__(self, starting: DaemonBeat) -> None:
        super().__init__()
        self.starting: DaemonBeat | None = starting

    async def daemons(self) -> list[DaemonSeen]:
        seen = await super().daemons()
        if self.starting is not None:
            starting, self.starting = self.starting, None
            clock = Clock()
            await claim_name(self, starting, "/old/davit.toml", lambda pid: True, clock.sleep, clock.monotonic)
        return seen


def test_forget_racing_a_start_of_the_name_does_not_retire_the_started_daemons_name() -> None:
    """`davit daemons forget old` finds no live row of old, then old starts (claim, first beat)
    before forget appends: the append must fail (the name stream moved on), not leave old
    running under a forgotten name (hidden from `davit daemons`)."""
    from davit.daemon.cli.daemons import forgotten
    from davit.daemon.cli.forget import forget_daemon

    async def main() -> None:
        starting = DaemonBeat("old", "1", 4242, "box-b", "2026-01-01T01:00:00.000001+00:00")
        store = StartsDuringForget(starting)
        dead = ev.NameClaimed(name="old", host="box-b", pid=17, started_at="2026-01-01T00:00:00.000001+00:00")
        await store.append(ev.name_stream("old"), 0, [ev.NewEvent.of("c0", dead)])  # its last life, gone
        with pytest.raises(InvalidArgument, match=r"did a daemon of this name start\? nothing retired"):
            await forget_daemon(store, "old")  # type: ignore[arg-type]
        assert not await forgotten(store, "old")  # type: ignore[arg-type]
        assert [e.type for e in await store.read_stream(ev.name_stream("old"))] == ["NameClaimed", "NameClaimed"]

    anyio.run(main)


def test_a_live_daemon_on_a_clone_of_this_host_bearing_its_host_name_refuses_the_start() -> None:
    """Two clones of one VM (one host name, the case the start-up check is for): the other's
    daemon beats live under the name with a pid this machine does not run. It is taken for
    this host's previous life (killed -9, its pid gone), so both start, and each takes the
    other's leases for its own dead life's."""

    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        other_machine = DaemonBeat("a", "1", 4242, "vm-clone", "2026-01-01T00:00:00.000001+00:00")
        await claim_name(
            store, other_machine, "/h/davit.toml", lambda pid: pid == 4242, clock.sleep, clock.monotonic, boot="boot-of-clone-1"
        )
        here = DaemonBeat("a", "1", 101, "vm-clone", "2026-01-01T00:00:01.000001+00:00")
        with pytest.raises(DaemonNameInUse):
            await claim_name(
                store, here, "/h/davit.toml", lambda pid: pid == 101, clock.sleep, clock.monotonic, boot="boot-of-clone-2"
            )

    anyio.run(main)


def test_this_machine_restarted_after_a_reboot_takes_its_stale_claim_for_its_previous_life() -> None:
    """The boot id tells clones apart, not lives of one machine: after a reboot (a new boot id)
    the daemon's old row is stale and its old claim does not hold the name."""

    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        before = DaemonBeat("a", "1", 4242, "vm-one", "2026-01-01T00:00:00.000001+00:00")
        await claim_name(store, before, "/h/davit.toml", lambda pid: True, clock.sleep, clock.monotonic, boot="boot-before")
        store._beats["a"] = (before, "2026-01-01T00:00:00+00:00", time.monotonic() - 3600)  # beat an hour ago
        after = DaemonBeat("a", "1", 101, "vm-one", "2026-01-01T01:00:00.000001+00:00")
        await claim_name(store, after, "/h/davit.toml", lambda pid: pid == 101, clock.sleep, clock.monotonic, boot="boot-after")
        last = (await store.read_stream(ev.name_stream("a")))[-1]
        assert (last.data["pid"], last.data["boot_id"]) == (101, "boot-after")
        assert clock.now < 1  # it did not wait for a daemon that is gone

    anyio.run(main)


def test_a_running_daemon_finds_its_name_claimed_by_another_life_of_its_host_and_pid() -> None:
    """Two clones whose daemons both run as pid 1 (containers) under one host name: the claim of
    the other's life (another start) is named by `keep_name`, so the superseded daemon stops."""

    async def main() -> None:
        store = MemoryEventStore()
        clock = Clock()
        mine = DaemonBeat("a", "1", 1, "vm-clone", "2026-01-01T00:00:00.000001+00:00")
        await claim_name(store, mine, "/h/davit.toml", lambda pid: pid == 1, clock.sleep, clock.monotonic, boot="boot-1")
        assert await keep_name(store, mine, boot="boot-1") is None
        theirs = ev.NameClaimed(name="a", host="vm-clone", pid=1, started_at="2026-01-01T00:05:00.000001+00:00", boot_id="boot-2")
        claims = await store.read_stream(ev.name_stream("a"))
        await store.append(ev.name_stream("a"), len(claims), [ev.NewEvent.of("clone-claim", theirs)])
        assert await keep_name(store, mine, boot="boot-1") == "host 'vm-clone' (pid 1)"

    anyio.run(main)

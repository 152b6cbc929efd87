"""A daemon paused (SIGSTOP, a frozen VM) past `ROSTER_LIVE_SECONDS` while a daemon of its name
started on another host: the newcomer rightly found the name free and claimed it. When the
paused one continues it must stop rather than run beside it: two daemons of one name would each
take the other's host-bound jobs (files, volumes, restores) for their own and run them on the
wrong host. Its next roster pass finds the other's claim, writes no beat over the other's row,
and asks the daemon to stop as for SIGTERM, recording why."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio

from davit.daemon.twins import claim_name
from davit.domain import events as ev
from davit.domain.daemons import DaemonBeat
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_leases import daemon
from tests.unit.test_schedule import FakeClock
from tests.unit.test_supervisor_memory import NOW


def test_a_paused_daemon_whose_name_another_daemon_claimed_stops_and_writes_no_beat(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        async with daemon(tmp_path, "a", store, FakeClock(NOW)) as paused:
            mine = DaemonBeat("a", "test", os.getpid(), paused.host, paused.started_at)
            await claim_name(store, mine, "/home-a/davit.toml")
            assert await paused._roster_pass() is False  # its own name: it beats on
            assert not paused.superseded.is_set()
            # paused past the live window: a daemon of its name on another host claims it and beats
            claims = await store.read_stream(ev.name_stream("a"))
            other = ev.NameClaimed(name="a", host="host-two", pid=7, started_at="2026-12-07T00:00:00+00:00")
            await store.append(ev.name_stream("a"), len(claims), [ev.NewEvent.of("claim-two", other)])
            await store.beat(DaemonBeat("a", "test", 7, "host-two", "2026-12-07T00:00:00+00:00"))
            # continued: its next pass finds the claim, stops the daemon and leaves the row alone
            assert await paused._roster_pass() is True
            assert paused.superseded.is_set()
            (seen,) = await store.daemons()
            assert (seen.beat.host, seen.beat.pid) == ("host-two", 7)
            with anyio.fail_after(5), anyio.open_signal_receiver(signal.SIGUSR2) as no_signals:
                assert await paused._wait_for_stop(no_signals) == "name claimed by another daemon"

    anyio.run(main)


def test_a_daemon_whose_name_was_forgotten_while_it_was_paused_claims_it_again_and_beats_on(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        async with daemon(tmp_path, "a", store, FakeClock(NOW)) as paused:
            mine = DaemonBeat("a", "test", os.getpid(), paused.host, paused.started_at)
            await claim_name(store, mine, "/home-a/davit.toml")
            claims = await store.read_stream(ev.name_stream("a"))
            await store.append(ev.name_stream("a"), len(claims), [ev.NewEvent.of("forgot", ev.NameForgotten(name="a"))])
            assert await paused._roster_pass() is False
            assert not paused.superseded.is_set()
            last = (await store.read_stream(ev.name_stream("a")))[-1]
            assert (last.type, last.data["pid"]) == ("NameClaimed", os.getpid())
            (seen,) = await store.daemons()
            assert seen.beat.pid == os.getpid()

    anyio.run(main)

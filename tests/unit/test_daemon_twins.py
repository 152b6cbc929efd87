"""Two davitd given one name on one log (`davit/daemon/twins.py`): the second one's start is
refused while the first beats, naming the first's host and pid; a previous life of the daemon
(same host, its process gone or the very pid) is no twin."""

from __future__ import annotations

import os
import socket

import anyio
import pytest

from davit.daemon.leases import ROSTER_LIVE_SECONDS
from davit.daemon.twins import pid_alive, refuse_live_twin
from davit.domain.daemons import DaemonBeat, DaemonSeen, live_twin
from davit.domain.errors import DaemonNameInUse
from davit.eventstore.memory import MemoryEventStore


def seen(host: str, pid: int, age: float, name: str = "a") -> DaemonSeen:
    return DaemonSeen(DaemonBeat(name, "1", pid, host, "2026-01-01T00:00:00+00:00"), "2026-01-01T00:00:05+00:00", age)


@pytest.mark.parametrize(
    ("other", "twin"),
    [
        (seen("elsewhere", 10, 2.0), True),  # another host beat 2 s ago
        (seen("here", 11, 2.0), True),  # a live process of this host (a second home)
        (seen("here", 12, 2.0), False),  # this host, its process gone: a previous life killed -9
        (seen("here", 99, 2.0), False),  # this very pid (a container restarted under one pid)
        (seen("elsewhere", 10, 60.0), False),  # an old beat: that daemon is gone
        (seen("elsewhere", 10, 2.0, name="b"), False),  # another name
    ],
)
def test_a_live_daemon_of_the_same_name_is_a_twin_and_a_previous_life_is_not(other: DaemonSeen, twin: bool) -> None:
    alive = {10, 11, 99}
    found = live_twin([other], "a", "here", 99, lambda pid: pid in alive, 15.0)
    assert (found is other) if twin else (found is None)


def test_the_start_of_a_second_daemon_of_a_name_is_refused_naming_the_first(tmp_path: object) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        await refuse_live_twin(store, "a", "/etc/davit/davit.toml")  # nobody beats yet
        await store.beat(DaemonBeat("a", "1", 4242, "host-one", "2026-01-01T00:00:00+00:00"))
        with pytest.raises(DaemonNameInUse) as raised:
            await refuse_live_twin(store, "a", "/etc/davit/davit.toml")
        text = str(raised.value)
        assert "/etc/davit/davit.toml" in text and "[daemon] name 'a'" in text
        assert "host-one" in text and "4242" in text and f"{ROSTER_LIVE_SECONDS:.0f} s" in text
        await refuse_live_twin(store, "b", "/etc/davit/davit.toml")  # another name starts
        # its own previous life on this host (the pid gone) does not hold it back
        await store.beat(DaemonBeat("c", "1", os.getpid(), socket.gethostname(), "2026-01-01T00:00:00+00:00"))
        await refuse_live_twin(store, "c", "/etc/davit/davit.toml")

    anyio.run(main)


def test_a_process_is_alive_while_it_runs() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(2**22 + 1)  # above pid_max's default ceiling

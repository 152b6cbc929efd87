"""Two davitd given one `[daemon] name` on one log: the second is refused at start.

A daemon takes leases in its own name found at start-up for its previous life's (dead), and
interrupts and resumes their runs: that is right after a crash and wrong when another live
daemon bears the name (two clones of a host, a copied config), whose runs it would interrupt.
So before it records `DaemonStarted` or recovers anything, a daemon reads the log's heartbeat
rows and refuses to start while a live daemon of its name beats there (within
`ROSTER_LIVE_SECONDS`, three of its beats), naming the other's host and pid. Its previous life
(same host, a process that is gone) does not count.
"""

from __future__ import annotations

import os
import socket

from davit.daemon.leases import ROSTER_LIVE_SECONDS
from davit.domain.daemons import live_twin
from davit.domain.errors import DaemonNameInUse
from davit.domain.ports import DaemonRoster


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


async def refuse_live_twin(roster: DaemonRoster, name: str, config_file: str) -> None:
    """Raise `DaemonNameInUse` if another live daemon beats on the log under `name`."""
    twin = live_twin(await roster.daemons(), name, socket.gethostname(), os.getpid(), pid_alive, ROSTER_LIVE_SECONDS)
    if twin is not None:
        raise DaemonNameInUse(config_file, name, twin.beat.host, twin.beat.pid, twin.age_seconds, ROSTER_LIVE_SECONDS)

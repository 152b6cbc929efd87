"""The daemons sharing one event log, as their heartbeats show them (`davit daemons`).

A beat is a row per daemon, replaced at each beat (`DaemonRoster`), not an event: a beat every
few seconds from every daemon would be most of the log (100 daemons beating every 5 s: 1.7
million events a day) and tells a replay nothing. What a replay needs of a daemon, its claims,
is in the run streams; its start and stop are `DaemonStarted`/`DaemonStopped` events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DaemonBeat:
    name: str
    version: str
    pid: int
    host: str
    started_at: str
    runs: list[str] = field(default_factory=list)  # the runs it executes (holds the lease of)
    log_problem: str | None = None


@dataclass(frozen=True)
class DaemonSeen:
    """A daemon's last beat and its age, measured by the log's own clock (the database
    server's): daemons on hosts whose clocks disagree are compared on one clock."""

    beat: DaemonBeat
    beat_at: str
    age_seconds: float


def live_twin(
    seen: list[DaemonSeen], name: str, host: str, pid: int, pid_alive: Callable[[int], bool], fresh_seconds: float
) -> DaemonSeen | None:
    """The daemon of `name` that beat within `fresh_seconds` and is not this one's previous life,
    or None. A previous life beat from this host with a process that is gone (killed -9 and
    restarted at once) or this very pid (a container restarted under one pid); a beat from
    another host, or from a live process of this host (a second home), is a twin's."""
    for other in seen:
        if other.beat.name != name or other.age_seconds >= fresh_seconds:
            continue
        if other.beat.host == host and (other.beat.pid == pid or not pid_alive(other.beat.pid)):
            continue
        return other
    return None

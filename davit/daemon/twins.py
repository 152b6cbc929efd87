"""Two davitd given one `[daemon] name` on one log: the second is refused at start.

A daemon takes leases in its own name found at start-up for its previous life's (dead), and
interrupts and resumes their runs: that is right after a crash and wrong when another live
daemon bears the name (two clones of a host, a copied config), whose runs it would interrupt.
So before it records `DaemonStarted` or recovers anything, a daemon reads the log's heartbeat
rows and refuses to start while a live daemon of its name beats there (within
`ROSTER_LIVE_SECONDS`, three of its beats), naming the other's host and pid. Its previous life
(same host, a process that is gone) does not count.

Two daemons of one name started at the same moment both find no beat (neither has beaten
yet), so the check alone let both start. The name is therefore also claimed: `NameClaimed`
(host, pid) appended at the version of the name's stream (`name_stream`) the daemon read, and
its first beat written right after. Of two claims at once one lands; the other daemon reads
the stream again and finds a claim whose daemon has not beaten yet: it waits (at most
`ROSTER_LIVE_SECONDS`) for that daemon's first beat, and then refuses as above, naming it. A
claim whose daemon is gone (its row stale, or this host's dead pid) does not hold the name; a
claim whose daemon never beat (it died between its claim and its first beat) holds it for
`ROSTER_LIVE_SECONDS` only.

"This host" is a host name and a boot id (`boot_id`, recorded on the claim): two clones of one
VM share the host name, and a clone's live daemon, whose pid this machine does not run, would
otherwise pass for this host's previous life (killed -9), and both clones would start. A live
row whose life (host, pid, start) was claimed under another boot id is a twin's.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from davit.daemon.leases import ROSTER_LIVE_SECONDS
from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.domain.daemons import DaemonBeat, DaemonSeen, live_twin
from davit.domain.errors import ConcurrencyError, DaemonNameInUse
from davit.domain.ports import DaemonRoster, EventLog

CLAIM_POLL_SECONDS = 0.2  # how often a claim not yet followed by its daemon's first beat is looked at again


class SharedLog(EventLog, DaemonRoster, Protocol):
    """A log several daemons share: its events and its heartbeat rows."""


BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """This machine's boot id (changes at each boot, differs between clones); "" where the
    kernel does not say (then clones are told apart by host name only, as before)."""
    try:
        with open(BOOT_ID_FILE, encoding="ascii") as file:
            return file.read(64).strip()
    except (OSError, ValueError):
        return ""


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
    await _refuse(await roster.daemons(), name, config_file, socket.gethostname(), os.getpid(), pid_alive)


async def _refuse(
    seen: list[DaemonSeen],
    name: str,
    config_file: str,
    host: str,
    pid: int,
    alive: Callable[[int], bool],
    claims: list[ev.StoredEvent] | None = None,
    boot: str = "",
) -> None:
    twin = _clone_twin(seen, claims or [], name, host, boot) or live_twin(seen, name, host, pid, alive, ROSTER_LIVE_SECONDS)
    if twin is not None:
        raise DaemonNameInUse(config_file, name, twin.beat.host, twin.beat.pid, twin.age_seconds, ROSTER_LIVE_SECONDS)


def _life(claim: ev.StoredEvent) -> tuple[str, int, str]:
    """The (host, pid, start) of the daemon's life a `NameClaimed` was made by ("" start in a
    claim recorded before starts were)."""
    return str(claim.data.get("host")), int(claim.data.get("pid") or 0), str(claim.data.get("started_at") or "")


def _other_boot(claim: ev.StoredEvent, boot: str) -> bool:
    """Whether `claim` was made on another machine than this one (booted as `boot`)."""
    theirs = str(claim.data.get("boot_id") or "")
    return bool(theirs and boot and theirs != boot)


def _clone_twin(seen: list[DaemonSeen], claims: list[ev.StoredEvent], name: str, host: str, boot: str) -> DaemonSeen | None:
    """A live row of `name` from this host name whose life was claimed on another machine (a
    clone of this one): `live_twin` would take it for this host's previous life."""
    for other in seen:
        if other.beat.name != name or other.beat.host != host or other.age_seconds >= ROSTER_LIVE_SECONDS:
            continue
        life = (other.beat.host, other.beat.pid, other.beat.started_at)
        for claim in claims:
            if claim.type != ev.NameClaimed.type_name():
                continue
            if _life(claim) != life:
                continue
            if _other_boot(claim, boot):
                return other
    return None


def _claim_holds(
    claim: ev.StoredEvent,
    seen: list[DaemonSeen],
    name: str,
    host: str,
    pid: int,
    alive: Callable[[int], bool],
    boot: str = "",
) -> bool:
    """Whether the last `NameClaimed` may be a live daemon's that has not beaten yet (its row
    is not there: the caller has already refused a live row)."""
    by_host, by_pid, by_start = _life(claim)
    if by_host == host and (by_pid == pid or not alive(by_pid)) and not _other_boot(claim, boot):
        return False  # this daemon's previous life
    # its own row there (and not live, or the caller had refused): it beat and stopped beating.
    # The row must be of the claim's life: a container restarted keeps its host name and pid 1,
    # and its previous life's stale row would let a claim not yet followed by a beat go unheld.
    return not any(
        s.beat.name == name
        and s.beat.host == by_host
        and s.beat.pid == by_pid
        and (not by_start or s.beat.started_at == by_start)
        for s in seen
    )


async def claim_name(
    store: SharedLog,
    first_beat: DaemonBeat,
    config_file: str,
    alive: Callable[[int], bool] = pid_alive,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    boot: str | None = None,
) -> None:
    """Claim `first_beat.name` for this daemon (see the module's docstring) and write its first
    beat; `DaemonNameInUse` naming the other daemon if a live one holds the name. `boot`: this
    machine's boot id (`boot_id()` when None)."""
    name, host, pid = first_beat.name, first_beat.host, first_beat.pid
    boot = boot_id() if boot is None else boot
    stream = ev.name_stream(name)
    waiting_since: float | None = None
    while True:
        seen = await store.daemons()
        claims = await store.read_stream(stream)
        await _refuse(seen, name, config_file, host, pid, alive, claims, boot)
        last = claims[-1] if claims and claims[-1].type == ev.NameClaimed.type_name() else None
        if last is not None and _claim_holds(last, seen, name, host, pid, alive, boot):
            # another daemon claimed the name and has not beaten yet (starting at this moment)
            waiting_since = monotonic() if waiting_since is None else waiting_since
            if monotonic() - waiting_since < ROSTER_LIVE_SECONDS:
                await sleep(CLAIM_POLL_SECONDS)
                continue
        claim = ev.NameClaimed(name=name, host=host, pid=pid, started_at=first_beat.started_at, boot_id=boot)
        try:
            await store.append(stream, len(claims), [ev.NewEvent.of(new_event_id(), claim)])
        except ConcurrencyError:
            continue  # another daemon's claim landed first: read again (its beat follows)
        await store.beat(first_beat)
        return


async def keep_name(store: SharedLog, beat: DaemonBeat, boot: str | None = None) -> str | None:
    """At each beat of a running daemon: claim its name again if `davit daemons forget` retired
    it while the daemon was paused or cut off (else `davit daemons` would not list a live
    daemon); the name of the daemon (host, pid) that claimed it since, if one did (it found this
    one silent for `ROSTER_LIVE_SECONDS`: two daemons now bear the name), for the caller to say.
    A claim of another life of (host, pid) (its start differs: a clone, a restarted container)
    is another daemon's too."""
    stream = ev.name_stream(beat.name)
    claims = await store.read_stream(stream)
    last = claims[-1] if claims else None
    if last is None or last.type == ev.NameForgotten.type_name():
        boot = boot_id() if boot is None else boot
        claim = ev.NameClaimed(name=beat.name, host=beat.host, pid=beat.pid, started_at=beat.started_at, boot_id=boot)
        try:
            await store.append(stream, len(claims), [ev.NewEvent.of(new_event_id(), claim)])
        except ConcurrencyError:
            pass  # another append since: looked at again at the next beat
        return None
    by_host, by_pid, by_start = _life(last)
    if last.type == ev.NameClaimed.type_name() and (
        (by_host, by_pid) != (beat.host, beat.pid) or (by_start and by_start != beat.started_at)
    ):
        return f"host {by_host!r} (pid {by_pid})"
    return None

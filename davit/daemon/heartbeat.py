"""davitd's heartbeat, and how `davit status` tells whether davitd is alive.

A heartbeat is a small JSON file in the state directory (`davitd.heartbeat`) that davitd
rewrites every `HEARTBEAT_SECONDS`: its pid, version, start time, the time of the beat (wall
clock, and the monotonic clock with the boot it belongs to, so a wall-clock step does not make
a live daemon look stale), the runs it is executing, and why its log cannot be written, if it
cannot. Not an event: a beat every few seconds would grow the log forever for nothing a replay
needs.

Alive means both: davitd holds its lock (`davitd.lock`, taken with `flock` at start and held
until it exits, so a daemon killed with -9 holds none) and its heartbeat is fresh. The lock is
read from `/proc/locks`, never by trying it: a probe that took the lock even for a moment could
make a davitd starting at that instant refuse to start. A heartbeat the status cannot trust (a
symlink, not a regular file, larger than `MAX_HEARTBEAT_BYTES`, not the JSON davitd writes) is
reported as unreadable, never followed or parsed further.

The beat is written to a temporary name and renamed over the old one, so a reader sees one beat
or the next, whole. It is not fsynced: after a crash or a power loss davitd holds no lock, so
the status says "not running" whatever the file holds; durability would buy nothing here.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from davit.domain.health import DaemonFacts, Heartbeat
from davit.eventstore.boundedread import TooLarge, file_kind, read_bounded

log = logging.getLogger("davitd.heartbeat")

HEARTBEAT_SECONDS = 10.0
HEARTBEAT_NAME = "davitd.heartbeat"
_TEMPORARY_NAME = ".davitd.heartbeat.tmp"
MAX_HEARTBEAT_BYTES = 64 << 10
MAX_LISTED_RUNS = 64  # run ids in a beat (a count beyond)
FORMAT = 1
PROC_LOCKS = Path("/proc/locks")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass
class HeartbeatWriter:
    """Writes davitd's beats into `state_dir`; `facts` gives what changes between beats."""

    state_dir: Path
    pid: int
    version: str
    started_at: str
    interval: float = HEARTBEAT_SECONDS
    _failing: str | None = None

    def write(self, running: list[str], log_problem: str | None) -> None:
        beat = {
            "format": FORMAT,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at,
            "beat_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "boot_id": boot_id(),
            "monotonic": time.monotonic(),
            "interval_seconds": self.interval,
            "running": running[:MAX_LISTED_RUNS],
            "running_count": len(running),
            "log_problem": log_problem,
        }
        data = json.dumps(beat, sort_keys=True).encode()
        dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.unlink(_TEMPORARY_NAME, dir_fd=dir_fd)  # a leftover, or something planted there
            except FileNotFoundError:
                pass
            fd = os.open(
                _TEMPORARY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
            try:
                if os.write(fd, data) != len(data):  # (a short write: the disk filled up)
                    raise OSError(errno.ENOSPC, "the heartbeat was written short")
            finally:
                os.close(fd)
            os.replace(_TEMPORARY_NAME, HEARTBEAT_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    async def beat_forever(self, facts: Callable[[], tuple[list[str], str | None]]) -> None:
        """Beat every `interval` until cancelled. A beat that cannot be written is logged once
        (and again when the reason changes); the status then sees the heartbeat age."""
        while True:
            await self.beat(facts)
            await anyio.sleep(self.interval)

    async def beat(self, facts: Callable[[], tuple[list[str], str | None]]) -> None:
        running, problem = facts()
        try:
            await anyio.to_thread.run_sync(self.write, running, problem)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if reason != self._failing:
                log.warning(
                    "the heartbeat in %s cannot be written: %s; davit status will call davitd not responding",
                    self.state_dir,
                    reason,
                )
            self._failing = reason
            return
        if self._failing is not None:
            log.info("the heartbeat in %s is written again", self.state_dir)
            self._failing = None


# --- reading (davit status) ----------------------------------------------------------------


def daemon_facts(state_dir: Path, lock_path: Path, now: datetime | None = None) -> DaemonFacts:
    """Whether davitd holds its lock, and its heartbeat with its age measured now."""
    held = lock_held(lock_path)
    try:
        beat = read_heartbeat(state_dir, now or datetime.now(UTC))
    except HeartbeatUnreadable as exc:
        return DaemonFacts(lock_held=held, heartbeat=None, heartbeat_problem=str(exc))
    return DaemonFacts(lock_held=held, heartbeat=beat)


def lock_held(lock_path: Path, locks: Path = PROC_LOCKS, mounts: Path = PROC_MOUNTINFO) -> bool:
    """Whether some process holds an exclusive `flock` on `lock_path`, as `/proc/locks` lists it:
    a line naming its device and its inode, both. The lock table writes the device of the file's
    file system (its superblock's); `stat` can say another (a btrfs subvolume's, an overlay's),
    so the device of the mount the file is on, as `/proc/self/mountinfo` gives it, is taken too.
    An inode number alone is no match: another file system's file with the same number, locked
    by anyone, would make a stopped davitd look alive. The file is opened to learn its mount
    (read-only, not following a link); opening takes no lock and disturbs none."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: no davitd ever ran here (or a link planted there: not davitd's)
    try:
        st = os.fstat(fd)
        mount_device = _mount_device(fd, mounts)
    finally:
        os.close(fd)
    try:
        table = locks.read_text()
    except OSError:
        return False  # no lock table: cannot be held that we see
    devices = {(os.major(st.st_dev), os.minor(st.st_dev))}
    if mount_device is not None:
        devices.add(mount_device)
    wanted = {f"{major:02x}:{minor:02x}:{st.st_ino}" for major, minor in devices}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        if fields[5] in wanted:
            return True
    return False


def _mount_device(fd: int, mounts: Path) -> tuple[int, int] | None:
    """(major, minor) of the mount `fd` is on, as mountinfo lists it (its `mnt_id` read from the
    descriptor's fdinfo); None if either cannot be read (an old kernel: the stat device alone)."""
    try:
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        mount_id = next(line.split()[1] for line in info.splitlines() if line.startswith("mnt_id:"))
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[0] == mount_id:
                major, minor = fields[2].split(":")
                return int(major), int(minor)
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None


class HeartbeatUnreadable(Exception):
    """The heartbeat file is missing or cannot be trusted; the message says which."""


def read_heartbeat(state_dir: Path, now: datetime) -> Heartbeat:
    """The heartbeat in `state_dir`, its age measured now: by the monotonic clock when the beat
    was written since this boot, else by the wall clock."""
    raw = _read(state_dir / HEARTBEAT_NAME)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a davitd heartbeat")
        return Heartbeat(
            pid=_typed(data, "pid", int),
            version=_typed(data, "version", str),
            started_at=_typed(data, "started_at", str),
            beat_at=_typed(data, "beat_at", str),
            interval_seconds=float(_typed(data, "interval_seconds", (int, float))),
            age_seconds=_age(data, now),
            log_problem=data.get("log_problem") if isinstance(data.get("log_problem"), str) else None,
        )
    except (ValueError, TypeError) as exc:  # (TypeError: a beat_at without a zone)
        raise HeartbeatUnreadable(f"{state_dir / HEARTBEAT_NAME}: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HeartbeatUnreadable(f"{path}: missing (davitd never beat here)") from None
    except OSError as exc:
        raise HeartbeatUnreadable(f"{path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise HeartbeatUnreadable(f"{path}: {file_kind(mode)}, not a regular file; not read")
        return read_bounded(fd, MAX_HEARTBEAT_BYTES, "a heartbeat")
    except TooLarge as exc:
        raise HeartbeatUnreadable(f"{path}: {exc}") from None
    except OSError as exc:
        raise HeartbeatUnreadable(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {key!r} is missing or not a {getattr(kind, '__name__', 'number')}")
    return value


def _age(data: dict[str, Any], now: datetime) -> float:
    monotonic = data.get("monotonic")
    if isinstance(monotonic, (int, float)) and data.get("boot_id") and data.get("boot_id") == boot_id():
        age = time.monotonic() - monotonic
        if age >= 0:  # (negative: written in another time namespace; the wall clock decides)
            return age
    return (now - datetime.fromisoformat(_typed(data, "beat_at", str))).total_seconds()

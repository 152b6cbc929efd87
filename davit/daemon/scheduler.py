"""The daemon's clocks, and noticing when the wall clock is stepped.

Fires are decided against the wall clock (cron times are wall-clock times); every wait, interval
and timeout uses the monotonic clock (`anyio.sleep` is monotonic), which a step of the wall
clock (NTP correcting a clock that was a year ahead, an operator's `date -s`) does not move.
`Clock` is injected so tests can step the wall clock at will.

The wall clock is read in the machine's time zone with its rules (`local_zone`), not in the
fixed UTC offset of the moment: a fire planned the day before a daylight-saving change must
land at 03:00 local after it (with a fixed offset the nightly job ran twice the night the
clocks went back, and an hour late the night they went forward).

`ClockWatch` compares how far each clock moved between two looks: a difference above
`STEP_TOLERANCE` is a step of the wall clock (or a suspend, during which the monotonic clock
stands still), which the supervisor records as `ClockMoved` before planning fires again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

STEP_TOLERANCE_SECONDS = 5.0


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall clock, timezone-aware, in the local zone (cron times are local)."""
        ...

    def monotonic(self) -> float: ...


def local_zone() -> tzinfo:
    """The machine's time zone with its daylight-saving rules: `TZ` if it names a zone, else
    /etc/localtime; failing both, the current fixed offset (read once: a zone changed while
    davitd runs applies at its next start)."""
    name = os.environ.get("TZ", "").removeprefix(":")
    try:
        if name and not name.startswith("/"):
            return ZoneInfo(name)
        with open(name or "/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key=name or "localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):  # e.g. a POSIX rule in TZ: what libc makes of it
        return datetime.now(UTC).astimezone().tzinfo or UTC


@dataclass
class SystemClock:
    zone: tzinfo = field(default_factory=local_zone)

    def now(self) -> datetime:
        return datetime.now(self.zone)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class ClockWatch:
    """Notices steps of the wall clock against the monotonic clock between calls to `check`."""

    clock: Clock
    tolerance: float = STEP_TOLERANCE_SECONDS

    def __post_init__(self) -> None:
        self._wall, self._mono = self.clock.now(), self.clock.monotonic()

    def check(self) -> float | None:
        """Seconds the wall clock was stepped since the previous check (negative: back), or None."""
        wall, mono = self.clock.now(), self.clock.monotonic()
        # (timestamps: a difference of datetimes sharing a zone is one of wall times, which
        # jumps by an hour when daylight saving changes, though the clock did not move)
        step = (wall.timestamp() - self._wall.timestamp()) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return step if abs(step) > self.tolerance else None


def retry_delay(retry_at: datetime, now: datetime, cap_seconds: float) -> float:
    """Seconds to wait for a retry recorded for wall time `retry_at`, between 0 and the policy's
    cap: a retry_at far ahead was computed on a clock that was ahead, and must not hold the run."""
    return min(max((retry_at - now).total_seconds(), 0.0), cap_seconds)

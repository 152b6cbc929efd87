"""Progress of a step as the log shows it: done of total, percent, rate and ETA.

Pure arithmetic over samples the run's fold keeps (the time and amount of each checkpoint), so
`davit show --follow`, `davit runs` and anything else that derives progress from the log agree.
The rate is measured over a recent window of samples, not since the step started: a resumed
run or a step that sped up is judged by how it goes now. A step measures in bytes when its
total bytes are known, else in items; with no total there is a rate but no percent or ETA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

# How far back the rate looks: long enough to smooth a few checkpoints, short enough to follow
# a change of pace.
RATE_WINDOW_SECONDS = 120.0
# How many samples a step keeps (the fold bounds its memory with it, whatever the run's length).
MAX_SAMPLES = 32
# The largest total a step can have (a 64-bit count): beyond it, or below 0, a total in the log
# is forged (or a hostile manifest's figure) and is read as unknown, never computed with (a
# Python int beyond a float's range makes the percent and ETA raise OverflowError).
MAX_TOTAL = (1 << 63) - 1


def plausible(total: int | None) -> int | None:
    """`total` if a step could have it, else None (unknown)."""
    if total is None or isinstance(total, bool) or not 0 <= total <= MAX_TOTAL:
        return None
    return total


@dataclass(frozen=True)
class Sample:
    """Where a step stood at a moment: seconds since the epoch, bytes and items done."""

    at: float
    bytes_done: int
    items_done: int


@dataclass(frozen=True)
class Progress:
    """A step's progress in one unit ("bytes" or "items")."""

    unit: str
    done: int
    total: int | None
    rate: float | None  # units per second over the recent window; None until two samples
    eta_seconds: float | None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    @property
    def percent(self) -> float | None:
        fraction = self.fraction
        return None if fraction is None else fraction * 100.0


def timestamp(iso: str) -> float | None:
    """Seconds since the epoch of a recorded time (the log's ISO 8601 with offset); None if it
    is not one (progress is then unknown, the run still folds)."""
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def rate(samples: Sequence[tuple[float, int]], window: float = RATE_WINDOW_SECONDS) -> float | None:
    """Units per second between the oldest sample within `window` of the newest and the newest;
    None with fewer than two samples or no time between them. Amounts that went down (a step
    redone after a crash) start the measure again at the drop."""
    if len(samples) < 2:
        return None
    newest_at, newest = samples[-1]
    start = len(samples) - 1
    while start > 0 and newest_at - samples[start - 1][0] <= window and samples[start - 1][1] <= samples[start][1]:
        start -= 1
    first_at, first = samples[start]
    elapsed = newest_at - first_at
    if elapsed <= 0 or start == len(samples) - 1:
        return None
    return max(0.0, (newest - first) / elapsed)


def eta(done: int, total: int | None, per_second: float | None) -> float | None:
    """Seconds left at `per_second`; 0 once done reaches total; None when unknown."""
    if total is None:
        return None
    if done >= total:
        return 0.0
    if not per_second:
        return None
    return (total - done) / per_second


def progress(
    samples: Sequence[Sample], bytes_total: int | None, items_total: int | None, bytes_done: int, items_done: int
) -> Progress:
    """A step's progress: in bytes if their total is known or no total is but bytes move, else
    in items."""
    in_bytes = bytes_total is not None or (items_total is None and bytes_done > 0)
    if in_bytes:
        unit, done, total = "bytes", bytes_done, bytes_total
        series = [(s.at, s.bytes_done) for s in samples]
    else:
        unit, done, total = "items", items_done, items_total
        series = [(s.at, s.items_done) for s in samples]
    per_second = rate(series)
    return Progress(unit, done, total, per_second, eta(done, total, per_second))


def duration(seconds: float | None) -> str:
    """A short human duration: 45s, 3m05s, 2h07m, 3d04h; "-" when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"

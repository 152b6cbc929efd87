"""Inline SVG and the escaping every rendered string goes through.

Every string from the log (job names, error messages, paths, warnings) is hostile: `text`
makes it safe as XML text or as a quoted attribute value. `html.escape` handles markup (`<`,
`&`, both quotes); before it, characters XML 1.0 cannot hold at all (C0/C1 controls, lone
surrogates, U+FFFE/U+FFFF: a parser rejects even their character references) and the bidi
controls that reorder what a reader sees are shown as visible `\\xNN`/`\\uNNNN` escapes, so
the page stays well-formed XML as well as HTML and shows what the log holds.
Numbers are formatted here, never taken as text from the log.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from davit.domain.progress import duration as progress_duration

# not XML 1.0 Chars (tab, LF and CR are), C1 controls, and bidi/format controls (Trojan Source)
_UNSHOWABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_TEXT = 2000  # characters of one string shown; the rest is counted


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: object, limit: int = MAX_TEXT) -> str:
    """`value` as escaped XML/HTML text, safe in element content and in quoted attributes."""
    raw = str(value)
    if len(raw) > limit:
        raw = f"{raw[:limit]}... ({len(raw) - limit} more characters)"
    return html.escape(_UNSHOWABLE.sub(_visible, raw), quote=True)


def num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def nice_step(span: float, ticks: int, steps: Sequence[float] | None = None) -> float:
    """A round step giving about `ticks` ticks over `span` (from `steps` if given, else 1-2-5 x 10^k)."""
    raw = max(span, 1e-9) / max(ticks, 1)
    if steps:
        return next((s for s in steps if s >= raw), steps[-1] * math.ceil(raw / steps[-1]))
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


TIME_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def duration(seconds: float) -> str:
    """`seconds` as `4.2s` (a chart's short runs differ in tenths), else as progress shows
    durations: `3m05s`, `2h10m`, `3d04h`."""
    if seconds < 59.95:
        return f"{seconds:.1f}s".replace(".0s", "s")
    return progress_duration(seconds)


@dataclass
class Plot:
    """A chart's frame: data coordinates (0..x_max, 0..y_max) mapped onto a `width` x `height`
    SVG, y growing upwards, with room for tick labels on the left and below."""

    width: int
    height: int
    x_max: float
    y_max: float
    left: int = 84
    right: int = 16
    top: int = 14
    bottom: int = 34

    def x(self, value: float) -> float:
        return self.left + (self.width - self.left - self.right) * value / max(self.x_max, 1e-9)

    def y(self, value: float) -> float:
        return self.height - self.bottom - (self.height - self.top - self.bottom) * value / max(self.y_max, 1e-9)

    def open(self, title: str) -> list[str]:
        return [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" role="img" aria-label="{text(title)}">',
            f"<title>{text(title)}</title>",
        ]

    def x_axis(self, label: Callable[[float], str], steps: Sequence[float] | None = None, ticks: int = 8) -> list[str]:
        out = []
        step = nice_step(self.x_max, ticks, steps)
        value = 0.0
        while value <= self.x_max + 1e-9:
            px = self.x(value)
            out.append(f'<line class="grid" x1="{num(px)}" y1="{self.top}" x2="{num(px)}" y2="{self.height - self.bottom}"/>')
            below = self.height - self.bottom + 16
            out.append(f'<text class="tick" x="{num(px)}" y="{below}" text-anchor="middle">{text(label(value))}</text>')
            value += step
        return out

    def y_axis(self, label: Callable[[float], str], ticks: int = 4) -> list[str]:
        out = []
        step = nice_step(self.y_max, ticks)
        value = 0.0
        while value <= self.y_max + 1e-9:
            py = self.y(value)
            out.append(f'<line class="grid" x1="{self.left}" y1="{num(py)}" x2="{self.width - self.right}" y2="{num(py)}"/>')
            out.append(f'<text class="tick" x="{self.left - 6}" y="{num(py + 4)}" text-anchor="end">{text(label(value))}</text>')
            value += step
        return out


def downsample(points: Sequence[tuple[float, float]], columns: int) -> list[tuple[float, float]]:
    """`points` (in x order) as at most `2 * columns + 2` points: the first, the last, and in each
    of `columns` equal slices of x the lowest and the highest point, in their order. A line drawn
    through them covers what the whole line covers at that width (a spike a pixel wide stays),
    where taking every n-th point would drop a run's one stall or burst. Points not in x order
    (never from the log's clock, but a chart must not grow because of it) are sliced by index."""
    if len(points) <= 2 * columns + 2:
        return list(points)
    first, last = points[0][0], points[-1][0]
    ordered = last > first and all(a[0] <= b[0] for a, b in itertools.pairwise(points))
    span = (last - first) if ordered else float(len(points))
    out = [points[0]]
    bucket, low, high = -1, 0, 0
    for index in range(1, len(points) - 1):
        position = (points[index][0] - first) if ordered else float(index)
        slot = min(int(position / span * columns), columns - 1)
        if slot != bucket:
            out += _extremes(points, low, high) if bucket >= 0 else []
            bucket, low, high = slot, index, index
        elif points[index][1] < points[low][1]:
            low = index
        elif points[index][1] > points[high][1]:
            high = index
    out += _extremes(points, low, high)
    out.append(points[-1])
    return out


def _extremes(points: Sequence[tuple[float, float]], low: int, high: int) -> list[tuple[float, float]]:
    return [points[i] for i in sorted({low, high})]


def columns(plot: Plot) -> int:
    """The plot's width in pixels: how many slices a line is drawn with at most."""
    return max(1, plot.width - plot.left - plot.right)


def polyline(plot: Plot, points: Sequence[tuple[float, float]], css: str) -> str:
    coords = " ".join(f"{num(plot.x(x))},{num(plot.y(y))}" for x, y in downsample(points, columns(plot)))
    return f'<polyline class="{css}" points="{coords}"/>'

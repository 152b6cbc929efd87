"""A job's recent runs side by side: each run's duration (a bar coloured by its outcome) and
how much it read and stored (lines), from the runs' folds, with a table of the same.

A run's duration is from its first attempt's start to its end (to `now` while it goes on);
a run that never started has none and draws no bar.

The page stays bounded whatever `--last` asks for: past `MAX_SLOTS` runs, consecutive runs
share a bar (the longest of them, coloured by the worst outcome among them), the size lines
keep each pixel column's lowest and highest point (`svg.downsample`), and the table lists the
last `MAX_TABLE_ROWS` runs; the page says so when it does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from davit.daemon.report.page import document, human_bytes
from davit.daemon.report.picture import parse_time
from davit.daemon.report.svg import Plot, duration, num, polyline, text
from davit.domain.machine import TERMINAL
from davit.domain.runs import RunView

MAX_SLOTS = 240  # bars drawn at most (each at least 3 pixels wide)
MAX_TABLE_ROWS = 500  # runs listed at most (the last ones)
# which outcome a bar of several runs shows: the worst among them
_WORST_FIRST = ("failed", "rolled_back", "cancelled", "interrupted", "waiting_retry")


@dataclass(frozen=True)
class TrendRow:
    run_id: str
    queued_at: str
    state: str
    attempts: int
    seconds: float | None
    bytes_done: int
    bytes_stored: int
    items_done: int
    warnings: int


def trend_rows(views: Sequence[RunView], job: str, last: int, now: datetime) -> list[TrendRow]:
    """The last `last` runs of `job` (by queue time), oldest first."""
    mine = sorted((v for v in views if v.job == job), key=lambda v: v.queued_at or "")[-last:]
    return [_row(v, now) for v in mine]


def _row(view: RunView, now: datetime) -> TrendRow:
    seconds = None
    if view.started_at:
        end = parse_time(view.finished_at) if view.finished_at and view.state in TERMINAL else now
        seconds = max(0.0, (end - parse_time(view.started_at)).total_seconds())
    return TrendRow(
        view.run_id,
        view.queued_at or "",
        view.state.value,
        view.attempt,
        seconds,
        view.bytes_done,
        sum(s.bytes_stored for s in view.steps.values()),
        view.items_done,
        len(view.warnings),
    )


def trends_page(job: str, rows: Sequence[TrendRow], generated_at: str) -> str:
    per_slot = _per_slot(rows)
    merged = (
        f"; drawn as {math.ceil(len(rows) / per_slot)} bars of {per_slot} consecutive runs each "
        "(the longest of each, coloured by the worst outcome among them)"
        if per_slot > 1
        else ""
    )
    body = [
        f"<h1>Runs of <q>{text(job)}</q></h1>",
        f'<p class="sub">the last {len(rows)} runs, oldest first{merged}</p>',
    ]
    if not rows:
        body.append("<p>This job has no runs in the log.</p>")
    else:
        body += [
            "<h2>Duration</h2>",
            duration_svg(rows),
            "<h2>Size</h2>",
            "<p>Bytes read (solid) and stored (dashed) by each run"
            + (" (each pixel column drawn from its smallest and largest run)" if per_slot > 1 else "")
            + ".</p>",
            size_svg(rows),
            "<h2>Runs</h2>",
            *_table(rows),
        ]
    body.append(f"<footer>davit report, generated {text(generated_at)} from the event log.</footer>")
    return document(f"davit report: runs of {job}", body)


def _per_slot(rows: Sequence[TrendRow]) -> int:
    """Runs per bar: 1 up to MAX_SLOTS runs, else as few as keep the bars within it."""
    return max(1, math.ceil(len(rows) / MAX_SLOTS))


def _slots(rows: Sequence[TrendRow]) -> list[tuple[int, Sequence[TrendRow]]]:
    """(index of its first run, its runs) for each bar."""
    size = _per_slot(rows)
    return [(start, rows[start : start + size]) for start in range(0, len(rows), size)]


def _index_axis(plot: Plot, slots: Sequence[tuple[int, Sequence[TrendRow]]]) -> list[str]:
    """Run numbers under the slots (every one, or every few when there are many)."""
    every = max(1, len(slots) // 12)
    return [
        f'<text class="tick" x="{num(plot.x(i + 0.5))}" y="{plot.height - plot.bottom + 16}" text-anchor="middle">'
        f"{start + 1}<title>{text(group[0].run_id)}</title></text>"
        for i, (start, group) in enumerate(slots)
        if i % every == 0 or i == len(slots) - 1
    ]


def _worst(group: Sequence[TrendRow]) -> str:
    states = {r.state for r in group}
    return next((s for s in _WORST_FIRST if s in states), group[-1].state)


def duration_svg(rows: Sequence[TrendRow]) -> str:
    top = max((r.seconds or 0.0 for r in rows), default=1.0) or 1.0
    slots = _slots(rows)
    plot = Plot(960, 220, float(len(slots)), top * 1.1)
    out = plot.open("duration of each run")
    out += plot.y_axis(duration)
    out += _index_axis(plot, slots)
    width = plot.x(1) - plot.x(0)
    for i, (start, group) in enumerate(slots):
        timed = [r for r in group if r.seconds is not None]
        if not timed:
            continue
        longest = max(timed, key=lambda r: r.seconds or 0.0)
        seconds = longest.seconds or 0.0
        x, y = plot.x(i) + width * 0.15, plot.y(seconds)
        out.append(
            f'<rect class="bar {text(_worst(group))}" x="{num(x)}" y="{num(y)}" width="{num(width * 0.7)}" '
            f'height="{num(plot.y(0) - y)}"><title>{text(_duration_tip(start, group, timed))}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _duration_tip(start: int, group: Sequence[TrendRow], timed: Sequence[TrendRow]) -> str:
    if len(group) == 1:
        row = group[0]
        return f"run {row.run_id} ({row.state}), queued {row.queued_at}: {duration(row.seconds or 0.0)}"
    seconds = [r.seconds or 0.0 for r in timed]
    failed = sum(r.state in ("failed", "rolled_back") for r in group)
    return (
        f"runs {start + 1} to {start + len(group)} ({group[0].run_id} to {group[-1].run_id}): "
        f"{duration(min(seconds))} to {duration(max(seconds))}, {failed} failed"
    )


def size_svg(rows: Sequence[TrendRow]) -> str:
    top = max(max(r.bytes_done for r in rows), max(r.bytes_stored for r in rows), 1)
    slots, size = _slots(rows), _per_slot(rows)
    plot = Plot(960, 220, float(len(slots)), top * 1.1)
    out = plot.open("bytes read and stored by each run")
    out += plot.y_axis(human_bytes)
    out += _index_axis(plot, slots)
    out.append(polyline(plot, [((i + 0.5) / size, float(r.bytes_done)) for i, r in enumerate(rows)], "line-read"))
    out.append(polyline(plot, [((i + 0.5) / size, float(r.bytes_stored)) for i, r in enumerate(rows)], "line-stored"))
    if size == 1:  # a dot per run to hover, while the runs are few enough to tell apart
        for i, row in enumerate(rows):
            tip = f"run {row.run_id}: read {human_bytes(row.bytes_done)}, stored {human_bytes(row.bytes_stored)}"
            out.append(
                f'<circle class="warning" cx="{num(plot.x(i + 0.5))}" cy="{num(plot.y(row.bytes_done))}" r="3">'
                f"<title>{text(tip)}</title></circle>"
            )
    out.append("</svg>")
    return "\n".join(out)


def _table(rows: Sequence[TrendRow]) -> list[str]:
    head = (
        "<tr><th>#</th><th>run</th><th>queued</th><th>state</th><th>attempts</th><th>duration</th>"
        "<th>read</th><th>stored</th><th>items</th><th>warnings</th></tr>"
    )
    skipped = max(0, len(rows) - MAX_TABLE_ROWS)
    body = "".join(
        f"<tr><td class='n'>{i + 1}</td><td>{text(r.run_id)}</td><td>{text(r.queued_at)}</td>"
        f'<td><span class="state {text(r.state)}">{text(r.state)}</span></td><td class="n">{r.attempts}</td>'
        f"<td class='n'>{'-' if r.seconds is None else duration(r.seconds)}</td>"
        f"<td class='n'>{human_bytes(r.bytes_done)}</td><td class='n'>{human_bytes(r.bytes_stored)}</td>"
        f"<td class='n'>{r.items_done}</td><td class='n'>{r.warnings}</td></tr>"
        for i, r in enumerate(rows)
        if i >= skipped
    )
    note = [f"<p>The last {MAX_TABLE_ROWS} runs; the {skipped} before them are in the charts only.</p>"] if skipped else []
    return [*note, f"<table>{head}{body}</table>"]

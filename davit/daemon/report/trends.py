"""A job's recent runs side by side: each run's duration (a bar coloured by its outcome) and
how much it read and stored (lines), from the runs' folds, with a table of the same.

A run's duration is from its first attempt's start to its end (to `now` while it goes on);
a run that never started has none and draws no bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from davit.daemon.report.page import document, human_bytes
from davit.daemon.report.picture import parse_time
from davit.daemon.report.svg import Plot, duration, num, polyline, text
from davit.domain.machine import TERMINAL
from davit.domain.runs import RunView


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
    body = [
        f"<h1>Runs of <q>{text(job)}</q></h1>",
        f'<p class="sub">the last {len(rows)} runs, oldest first</p>',
    ]
    if not rows:
        body.append("<p>This job has no runs in the log.</p>")
    else:
        body += [
            "<h2>Duration</h2>",
            duration_svg(rows),
            "<h2>Size</h2>",
            "<p>Bytes read (solid) and stored (dashed) by each run.</p>",
            size_svg(rows),
            "<h2>Runs</h2>",
            _table(rows),
        ]
    body.append(f"<footer>davit report, generated {text(generated_at)} from the event log.</footer>")
    return document(f"davit report: runs of {job}", body)


def _index_axis(plot: Plot, rows: Sequence[TrendRow]) -> list[str]:
    """Run numbers under the slots (every one, or every few when there are many)."""
    every = max(1, len(rows) // 12)
    return [
        f'<text class="tick" x="{num(plot.x(i + 0.5))}" y="{plot.height - plot.bottom + 16}" text-anchor="middle">'
        f"{i + 1}<title>{text(r.run_id)}</title></text>"
        for i, r in enumerate(rows)
        if i % every == 0 or i == len(rows) - 1
    ]


def duration_svg(rows: Sequence[TrendRow]) -> str:
    top = max((r.seconds or 0.0 for r in rows), default=1.0) or 1.0
    plot = Plot(960, 220, float(len(rows)), top * 1.1)
    out = plot.open("duration of each run")
    out += plot.y_axis(duration)
    out += _index_axis(plot, rows)
    slot = plot.x(1) - plot.x(0)
    for i, row in enumerate(rows):
        if row.seconds is None:
            continue
        x, y = plot.x(i) + slot * 0.15, plot.y(row.seconds)
        tip = f"run {row.run_id} ({row.state}), queued {row.queued_at}: {duration(row.seconds)}"
        out.append(
            f'<rect class="bar {text(row.state)}" x="{num(x)}" y="{num(y)}" width="{num(slot * 0.7)}" '
            f'height="{num(plot.y(0) - y)}"><title>{text(tip)}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out)


def size_svg(rows: Sequence[TrendRow]) -> str:
    top = max(max(r.bytes_done for r in rows), max(r.bytes_stored for r in rows), 1)
    plot = Plot(960, 220, float(len(rows)), top * 1.1)
    out = plot.open("bytes read and stored by each run")
    out += plot.y_axis(human_bytes)
    out += _index_axis(plot, rows)
    out.append(polyline(plot, [(i + 0.5, float(r.bytes_done)) for i, r in enumerate(rows)], "line-read"))
    out.append(polyline(plot, [(i + 0.5, float(r.bytes_stored)) for i, r in enumerate(rows)], "line-stored"))
    for i, row in enumerate(rows):
        tip = f"run {row.run_id}: read {human_bytes(row.bytes_done)}, stored {human_bytes(row.bytes_stored)}"
        out.append(
            f'<circle class="warning" cx="{num(plot.x(i + 0.5))}" cy="{num(plot.y(row.bytes_done))}" r="3">'
            f"<title>{text(tip)}</title></circle>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _table(rows: Sequence[TrendRow]) -> str:
    head = (
        "<tr><th>#</th><th>run</th><th>queued</th><th>state</th><th>attempts</th><th>duration</th>"
        "<th>read</th><th>stored</th><th>items</th><th>warnings</th></tr>"
    )
    body = "".join(
        f"<tr><td class='n'>{i + 1}</td><td>{text(r.run_id)}</td><td>{text(r.queued_at)}</td>"
        f'<td><span class="state {text(r.state)}">{text(r.state)}</span></td><td class="n">{r.attempts}</td>'
        f"<td class='n'>{'-' if r.seconds is None else duration(r.seconds)}</td>"
        f"<td class='n'>{human_bytes(r.bytes_done)}</td><td class='n'>{human_bytes(r.bytes_stored)}</td>"
        f"<td class='n'>{r.items_done}</td><td class='n'>{r.warnings}</td></tr>"
        for i, r in enumerate(rows)
    )
    return f"<table>{head}{body}</table>"

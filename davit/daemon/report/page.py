"""One run's report as a self-contained HTML page: totals, a timeline, throughput from the
checkpoints, what happened, warnings and the error.

The page holds no script and loads nothing (its Content-Security-Policy says so too: a browser
refuses any script or fetch even if one slipped in). It is well-formed XML as well as HTML
(tests parse it with an XML parser); every string from the log goes through `svg.text`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from davit.daemon.cli import common
from davit.daemon.report.picture import RUN_LANE, Mark, RunPicture, Sample, Span
from davit.daemon.report.svg import TIME_STEPS, Plot, columns, duration, num, polyline, text

MAX_MARKS_DRAWN = 300  # warnings beyond these are listed (up to MAX_WARNINGS_LISTED), not drawn
MAX_WARNINGS_LISTED = 500

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; color: #1d2330; background: #fbfbfd; margin: 24px 32px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #5b6475; margin: 0 0 16px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 9px; color: #fff; background: #6b7280; }
.state.succeeded { background: #15803d; } .state.failed, .state.rolled_back { background: #b91c1c; }
.state.cancelled { background: #92400e; } .state.running, .state.verifying, .state.preparing { background: #1d4ed8; }
.state.waiting_retry, .state.interrupted { background: #c2410c; }
table { border-collapse: collapse; margin: 4px 0; } td, th { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
th { color: #5b6475; font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.totals td:first-child { color: #5b6475; }
.err { background: #fef2f2; border-left: 4px solid #b91c1c; padding: 8px 12px; white-space: pre-wrap; word-break: break-word; }
ol.warn li, td.t { white-space: pre-wrap; word-break: break-word; }
svg { display: block; background: #fff; border: 1px solid #e3e6ec; margin: 6px 0; }
svg .grid { stroke: #eceef3; } svg .tick, svg .lane { font: 11px system-ui, sans-serif; fill: #5b6475; }
svg .span.queued { fill: #cbd5e1; } svg .span.attempt { fill: #93c5fd; } svg .span.waiting { fill: #fed7aa; }
svg .span.step { fill: #86efac; } svg .span.running { fill-opacity: .55; }
svg .span.interrupted, svg .span.retry, svg .span.failed, svg .span.rolled_back { stroke: #b91c1c; stroke-width: 1.5; }
svg .mark { stroke-width: 2; } svg .mark.retry, svg .mark.interrupted, svg .mark.failed { stroke: #b91c1c; }
svg .mark.resumed { stroke: #1d4ed8; stroke-dasharray: 4 3; } svg .mark.succeeded { stroke: #15803d; }
svg .mark.cancel, svg .mark.cancelled, svg .mark.rollback, svg .mark.verifying { stroke: #92400e; stroke-dasharray: 2 2; }
svg .warning { fill: #d97706; } svg .line-read { fill: none; stroke: #1d4ed8; stroke-width: 2; }
svg .line-stored { fill: none; stroke: #15803d; stroke-width: 1.5; stroke-dasharray: 5 3; }
svg .bar { fill: #93c5fd; }
svg .bar.failed, svg .bar.rolled_back { fill: #fca5a5; } svg .bar.succeeded { fill: #86efac; }
.legend span { display: inline-block; margin-right: 14px; color: #5b6475; }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px; vertical-align: middle; }
footer { margin-top: 32px; color: #8a92a3; font-size: 12px; }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def document(title: str, body: Iterable[str]) -> str:
    """The page around `body` (already escaped): no script, nothing loaded from anywhere."""
    head = (
        '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n<head>\n<meta charset="utf-8"/>\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"/>\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n'
        f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    )
    return head + "\n".join(body) + "\n</body>\n</html>\n"


def human_bytes(n: float) -> str:
    return common.human_bytes(int(n))


def rows(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f"<tr><td>{text(k)}</td><td>{text(v)}</td></tr>" for k, v in pairs)


# --- the run page ----------------------------------------------------------------------------


def run_page(pic: RunPicture, generated_at: str) -> str:
    view = pic.view
    title = f"davit report: run {view.run_id} of {view.job}"
    body = [
        f"<h1>Run {text(view.run_id)} of <q>{text(view.job)}</q></h1>",
        f'<p class="sub"><span class="state {text(view.state.value)}">{text(view.state.value)}</span> '
        f"{text(view.kind)} job, {text(view.reason)}; queued {text(view.queued_at or '-')}</p>",
        *_error(pic),
        "<h2>Totals</h2>",
        f'<table class="totals">{rows(_totals(pic))}</table>',
        *_steps_table(pic),
        "<h2>Timeline</h2>",
        _legend(),
        timeline_svg(pic),
        "<h2>Throughput</h2>",
        *_throughput(pic),
        "<h2>What happened</h2>",
        *_happenings(pic),
        *_warnings(pic),
        f"<footer>davit report, generated {text(generated_at)} from the event log.</footer>",
    ]
    return document(title, body)


def _error(pic: RunPicture) -> list[str]:
    view = pic.view
    if not view.error:
        return []
    return [f'<div class="err"><b>{text(view.error_type or "error")}</b>: {text(view.error)}</div>']


def _totals(pic: RunPicture) -> list[tuple[str, object]]:
    view = pic.view
    stored = sum(s.bytes_stored for s in view.steps.values())
    pairs: list[tuple[str, object]] = [
        ("duration", duration(pic.end) + " since queued"),
        ("started / finished", f"{view.started_at or '-'} / {view.finished_at or '-'}"),
        ("attempts", view.attempt),
        ("interruptions", view.interruptions),
        ("read", f"{human_bytes(view.bytes_done)} ({view.bytes_done} bytes) in {view.items_done} items"),
        ("stored", f"{human_bytes(stored)} ({stored} bytes)"),
        ("checkpoints", f"{view.checkpoints} ({view.chunks_written} chunks written)"),
        ("warnings", len(view.warnings)),
    ]
    if view.snapshot_id:
        pairs.append(("snapshot", view.snapshot_id))
    if view.retry_at:
        pairs.append(("retry at", view.retry_at))
    pairs += [(f"detail: {k}", v) for k, v in view.details.items()]
    return pairs


def _steps_table(pic: RunPicture) -> list[str]:
    if not pic.view.steps:
        return []
    spent: dict[str, float] = {}
    for span in pic.spans:
        if span.kind == "step":
            spent[span.lane] = spent.get(span.lane, 0.0) + _length(span, pic.end)
    head = "<tr><th>step</th><th>status</th><th>time</th><th>checkpoints</th><th>read</th><th>stored</th><th>items</th></tr>"
    body = "".join(
        f"<tr><td>{text(s.name)}</td><td>{text(s.status)}</td><td class='n'>{duration(spent.get(s.name, 0.0))}</td>"
        f"<td class='n'>{s.checkpoints}</td><td class='n'>{human_bytes(s.bytes_done)}</td>"
        f"<td class='n'>{human_bytes(s.bytes_stored)}</td><td class='n'>{s.items_done}</td></tr>"
        for s in pic.view.steps.values()
    )
    return ["<h2>Steps</h2>", f"<table>{head}{body}</table>"]


def _length(span: Span, end: float) -> float:
    return max(0.0, (span.end if span.end is not None else end) - span.start)


def _legend() -> str:
    items = [
        ("#cbd5e1", "queued"),
        ("#93c5fd", "attempt"),
        ("#86efac", "step"),
        ("#fed7aa", "waiting (retry, interrupted)"),
        ("#b91c1c", "retry / interruption / failure"),
        ("#1d4ed8", "resumed"),
        ("#d97706", "warning"),
    ]
    return '<p class="legend">' + "".join(f'<span><i style="background:{c}"></i>{t}</span>' for c, t in items) + "</p>"


# --- the timeline ----------------------------------------------------------------------------

LANE_HEIGHT = 26


def timeline_svg(pic: RunPicture) -> str:
    lanes = pic.lanes
    plot = Plot(960, 20 + 34 + LANE_HEIGHT * len(lanes), max(pic.end, 1.0), 1.0, left=150, top=20)
    out = plot.open(f"timeline of run {pic.view.run_id}")
    out += plot.x_axis(duration, TIME_STEPS)
    for index, lane in enumerate(lanes):
        out.append(f'<text class="lane" x="6" y="{plot.top + index * LANE_HEIGHT + 17}">{text(lane, 22)}</text>')
    for span in pic.spans:
        out.append(_span_rect(plot, span, lanes.index(span.lane), pic.end))
    out += _mark_lines(plot, pic.marks, lanes)
    out.append("</svg>")
    return "\n".join(out)


def _span_rect(plot: Plot, span: Span, lane: int, end: float) -> str:
    x0, x1 = plot.x(span.start), plot.x(span.end if span.end is not None else end)
    y = plot.top + lane * LANE_HEIGHT + 4
    tip = f"{span.label}: {duration(span.start)} to {duration(span.end if span.end is not None else end)} ({span.status})"
    return (
        f'<rect class="span {span.kind} {span.status}" x="{num(x0)}" y="{y}" width="{num(max(x1 - x0, 1.5))}" '
        f'height="{LANE_HEIGHT - 8}" rx="3"><title>{text(tip)}</title></rect>'
    )


def _mark_lines(plot: Plot, marks: Sequence[Mark], lanes: list[str]) -> list[str]:
    out = []
    bottom = plot.top + len(lanes) * LANE_HEIGHT
    warnings = 0
    for mark in marks:
        px = num(plot.x(mark.at))
        tip = f"<title>{text(f'{duration(mark.at)}: {mark.text}')}</title>"
        if mark.kind != "warning":
            out.append(f'<line class="mark {mark.kind}" x1="{px}" y1="{plot.top - 6}" x2="{px}" y2="{bottom}">{tip}</line>')
            continue
        warnings += 1
        if warnings > MAX_MARKS_DRAWN:
            continue
        lane = lanes.index(mark.lane) if mark.lane in lanes else 0
        cy = plot.top + lane * LANE_HEIGHT + LANE_HEIGHT // 2
        out.append(f'<circle class="warning" cx="{px}" cy="{cy}" r="4">{tip}</circle>')
    return out


# --- throughput --------------------------------------------------------------------------------


def _throughput(pic: RunPicture) -> list[str]:
    if not pic.samples:
        return ["<p>No checkpoint was recorded, so there is no progress to draw.</p>"]
    start = min((s.start for s in pic.spans if s.kind == "step"), default=0.0)
    drawn = columns(Plot(960, 220, 1.0, 1.0))
    merged = (
        f" {len(pic.samples)} checkpoints: each line is drawn from the lowest and highest point of each of"
        f" {drawn} pixel columns, so no peak or stall is lost."
        if len(pic.samples) > drawn
        else ""
    )
    return [
        "<p>Bytes read (solid) and stored (dashed) as the checkpoints recorded them (a files backup counts a file"
        f" as read once it is whole).{merged}</p>",
        progress_svg(pic.samples, pic.end),
        "<p>Read (solid) and stored (dashed) bytes per second between consecutive checkpoints.</p>",
        rate_svg(pic.samples, start, pic.end),
    ]


def progress_svg(samples: Sequence[Sample], end: float) -> str:
    top = max(max(s.bytes_done for s in samples), max(s.bytes_stored for s in samples), 1)
    plot = Plot(960, 220, max(end, 1.0), top * 1.05)
    out = plot.open("bytes read and stored over time")
    out += plot.x_axis(duration, TIME_STEPS)
    out += plot.y_axis(human_bytes)
    out.append(polyline(plot, [(0.0, 0.0), *((s.at, float(s.bytes_done)) for s in samples)], "line-read"))
    out.append(polyline(plot, [(0.0, 0.0), *((s.at, float(s.bytes_stored)) for s in samples)], "line-stored"))
    out.append("</svg>")
    return "\n".join(out)


def rates(samples: Sequence[Sample], start: float, field: str) -> list[tuple[float, float, float]]:
    """(from, to, bytes per second) of `field` between consecutive checkpoints; a drop (a step
    that starts again after a resume) counts as no progress, not as a negative rate."""
    out = []
    last_at, last_value = start, 0
    for sample in samples:
        value = getattr(sample, field)
        gap = sample.at - last_at
        if gap > 0:
            out.append((last_at, sample.at, max(value - last_value, 0) / gap))
        last_at, last_value = sample.at, value
    return out


def rate_svg(samples: Sequence[Sample], start: float, end: float) -> str:
    read, stored = rates(samples, start, "bytes_done"), rates(samples, start, "bytes_stored")
    top = max((r for _, _, r in [*read, *stored]), default=1.0) or 1.0
    plot = Plot(960, 180, max(end, 1.0), top * 1.1)
    out = plot.open("read and stored rate between checkpoints")
    out += plot.x_axis(duration, TIME_STEPS)
    out += plot.y_axis(lambda v: human_bytes(v) + "/s")
    for series, css in ((stored, "line-stored"), (read, "line-read")):
        steps = [(start, 0.0)] + [p for t0, t1, rate in series for p in ((t0, rate), (t1, rate))]
        out.append(polyline(plot, steps, css))
    out.append("</svg>")
    return "\n".join(out)


# --- lists -----------------------------------------------------------------------------------


def _happenings(pic: RunPicture) -> list[str]:
    marks = [m for m in pic.marks if m.kind != "warning"]
    if not marks:
        return ["<p>Nothing but the work itself: no retry, interruption or cancel.</p>"]
    body = "".join(
        f"<tr><td class='n'>{duration(m.at)}</td><td>{text(m.kind)}</td><td class='t'>{text(m.text)}</td></tr>" for m in marks
    )
    return [f"<table><tr><th>at</th><th>what</th><th>detail</th></tr>{body}</table>"]


def _warnings(pic: RunPicture) -> list[str]:
    warnings = pic.warnings
    if not warnings:
        return ["<h2>Warnings</h2>", "<p>None.</p>"]
    shown = warnings[:MAX_WARNINGS_LISTED]
    items = "".join(
        f"<li>{duration(w.at)}{'' if w.lane == RUN_LANE else ' [' + text(w.lane) + ']'}: {text(w.text)}</li>" for w in shown
    )
    more = (
        f"<p>... and {len(warnings) - len(shown)} more (<code>davit show</code> lists them all).</p>"
        if len(warnings) > len(shown)
        else ""
    )
    return [f"<h2>Warnings ({len(warnings)})</h2>", f'<ol class="warn">{items}</ol>', more]

"""A report stays a page a browser opens at once, whatever the log holds: a run with a hundred
thousand checkpoints, or a job's ten thousand runs, draws a bounded number of points, keeps the
stall and the burst a reader is looking for, and says that points were merged."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from davit.daemon.report.page import progress_svg, rate_svg, run_page
from davit.daemon.report.picture import Sample, picture
from davit.daemon.report.svg import Plot, columns, downsample, num
from davit.daemon.report.trends import MAX_SLOTS, MAX_TABLE_ROWS, TrendRow, trends_page
from davit.domain import events as ev

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POINTS = 100_000
SPIKE, DIP = 54_321, 77_777
WIDTH = columns(Plot(960, 220, 1.0, 1.0))


def test_a_hundred_thousand_points_are_drawn_as_two_per_pixel_column_with_the_extremes_kept() -> None:
    points = [(float(i), 100.0 + (i % 7)) for i in range(POINTS)]
    points[SPIKE], points[DIP] = (float(SPIKE), 1e9), (float(DIP), -5.0)
    kept = downsample(points, WIDTH)
    assert len(kept) <= 2 * WIDTH + 2
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert points[SPIKE] in kept and points[DIP] in kept
    assert [x for x, _ in kept] == sorted(x for x, _ in kept)  # still a line, left to right
    # every column's highest and lowest value survives, not one of every n points
    assert max(y for _, y in kept) == 1e9 and min(y for _, y in kept) == -5.0
    assert {y for _, y in kept} >= {100.0, 106.0}


def test_a_few_points_are_drawn_as_they_are() -> None:
    points = [(float(i), float(i * i)) for i in range(50)]
    assert downsample(points, WIDTH) == points


def checkpoints(count: int) -> list[ev.StoredEvent]:
    """A run that stores `count` checkpoints a tenth of a second apart, with one long stall."""
    events: list[ev.Event] = [
        ev.RunQueued(run_id="r1", job="big", kind="files.backup", revision="r", spec={}, reason="manual"),
        ev.RunPreparing(attempt=1),
        ev.RunStarted(plan=["store"]),
        ev.StepStarted(step="store"),
    ]
    times = [0.0, 0.5, 0.6, 0.7]
    for i in range(count):
        done = (i + 1) * 1000 + (50_000_000 if i >= SPIKE else 0)  # a burst: 50 MB in one checkpoint
        events.append(ev.CheckpointRecorded(step="store", cursor={}, bytes_done=done, bytes_stored=done // 2, items_done=i))
        times.append(1.0 + i * 0.1)
    events += [ev.StepCompleted(step="store"), ev.RunVerifying(), ev.RunSucceeded(snapshot_id="s")]
    times += [times[-1] + 0.1] * 3
    return [
        ev.StoredEvent(
            n + 1,
            "run-r1",
            n + 1,
            f"e{n}",
            event.type_name(),
            1,
            event.model_dump(mode="json"),
            (T0 + timedelta(seconds=at)).isoformat(timespec="microseconds"),
        )
        for n, (event, at) in enumerate(zip(events, times, strict=True))
    ]


def test_a_run_with_a_hundred_thousand_checkpoints_makes_a_bounded_page_that_says_so() -> None:
    pic = picture("r1", checkpoints(POINTS), T0 + timedelta(days=1))
    assert len(pic.samples) == POINTS
    page = run_page(pic, "now")
    assert len(page) < 200_000, len(page)  # (72 kB; taking every n-th point instead lost the burst below)
    ET.fromstring(page.replace("<!DOCTYPE html>", ""))
    assert f"{POINTS} checkpoints: each line is drawn from the lowest and highest point" in page
    lines = re.findall(r'<polyline class="[^"]+" points="([^"]*)"', page)
    assert len(lines) == 4 and all(len(points.split()) <= 2 * WIDTH + 2 for points in lines)
    # the burst's rate is the rate chart's top: its step is drawn, not averaged away
    rates = [float(p.split(",")[1]) for p in lines[3].split()]
    assert min(rates) == float(num(Plot(960, 180, 1.0, 1.1).y(1.0)))


def row(i: int, seconds: float, state: str = "succeeded") -> TrendRow:
    return TrendRow(f"run{i:05d}", f"2026-01-01T{i % 24:02d}:00", state, 1, seconds, 1000 + i, 500, 10, 0)


def test_ten_thousand_runs_of_a_job_draw_merged_bars_that_keep_the_longest_and_the_failures() -> None:
    rows = [row(i, 60.0 + i % 5) for i in range(10_000)]
    rows[4321] = row(4321, 7200.0)
    rows[8765] = row(8765, 61.0, "failed")
    page = trends_page("big", rows, "now")
    assert len(page) < 300_000, len(page)  # (208 kB; every run drawn and listed: 5.3 MB)
    ET.fromstring(page.replace("<!DOCTYPE html>", ""))
    assert "drawn as 239 bars of 42 consecutive runs each" in page
    assert len(re.findall(r"<rect class=\"bar ", page)) <= MAX_SLOTS
    assert re.search(r"runs 4285 to 4326 \([^)]*\): 1m00s to 2h00m, 0 failed", page)  # run 4322 is among them
    assert len(re.findall(r'<rect class="bar failed"', page)) == 1
    assert page.count("<tr><td class='n'>") == MAX_TABLE_ROWS
    assert f"The last {MAX_TABLE_ROWS} runs; the {10_000 - MAX_TABLE_ROWS} before them are in the charts only." in page


def test_a_hundred_thousand_samples_make_bounded_charts() -> None:
    samples = [Sample(i * 0.1, i * 1000, i * 400, i) for i in range(POINTS)]
    chart = progress_svg(samples, POINTS * 0.1) + rate_svg(samples, 0.0, POINTS * 0.1)
    assert len(chart) < 120_000, len(chart)

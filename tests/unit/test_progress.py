"""Progress from the log: rate over recent checkpoints, ETA, percent, and the fold that feeds them."""

from __future__ import annotations

import itertools
import json

import pytest

from davit.adapters.files.totals import snapshot_totals
from davit.daemon.cli.common import human_bytes
from davit.daemon.cli.follow import describe, run_progress
from davit.domain import events as ev
from davit.domain.progress import Sample, duration, eta, progress, rate
from davit.domain.runs import fold

_positions = itertools.count(1)


def at(seconds: int) -> str:
    return f"2026-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}+00:00"


def stored(timed: list[tuple[int, ev.Event]]) -> list[ev.StoredEvent]:
    return [
        ev.StoredEvent(next(_positions), "run-r1", i + 1, f"e{i}", e.type_name(), 1, e.model_dump(mode="json"), at(t))
        for i, (t, e) in enumerate(timed)
    ]


def cp(done: int, items: int = 0, **totals: int) -> ev.CheckpointRecorded:
    return ev.CheckpointRecorded(step="store", cursor={}, bytes_done=done, items_done=items, **totals)


def started(t: int = 0) -> list[tuple[int, ev.Event]]:
    return [
        (t, ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="r", spec={}, reason="manual")),
        (t, ev.RunPreparing(attempt=1)),
        (t, ev.RunStarted(plan=["store", "publish"])),
        (t, ev.StepStarted(step="store")),
    ]


def test_a_steady_rate_gives_the_time_left_for_the_rest() -> None:
    per_second = rate([(0.0, 0), (10.0, 100), (20.0, 200)])
    assert per_second == pytest.approx(10.0)
    assert eta(200, 1000, per_second) == pytest.approx(80.0)


def test_the_rate_follows_the_recent_pace_not_the_whole_step() -> None:
    # slow for ten minutes, then fast for the last two: the window sees only the fast part
    samples = [(0.0, 0), (600.0, 600), (660.0, 6600), (720.0, 12600)]
    assert rate(samples, window=120.0) == pytest.approx(100.0)


def test_a_step_redone_from_zero_measures_from_the_drop() -> None:
    assert rate([(0.0, 0), (10.0, 500), (20.0, 0), (30.0, 50)]) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("samples", "why"),
    [([], "no samples"), ([(5.0, 10)], "one sample"), ([(5.0, 10), (5.0, 20)], "no time between")],
    ids=["empty", "single", "same-instant"],
)
def test_no_rate_until_two_samples_apart_in_time(samples: list[tuple[float, int]], why: str) -> None:
    assert rate(samples) is None, why


def test_eta_is_unknown_without_a_total_or_a_rate_and_zero_once_done() -> None:
    assert eta(10, None, 5.0) is None
    assert eta(10, 100, None) is None
    assert eta(100, 100, None) == 0.0


def test_a_step_with_a_byte_total_measures_in_bytes() -> None:
    samples = [Sample(0.0, 0, 0), Sample(10.0, 1000, 3)]
    p = progress(samples, bytes_total=4000, items_total=12, bytes_done=1000, items_done=3)
    assert (p.unit, p.percent, p.rate, p.eta_seconds) == ("bytes", 25.0, 100.0, 30.0)


def test_a_step_with_only_an_item_total_measures_in_items() -> None:
    samples = [Sample(0.0, 0, 0), Sample(10.0, 0, 50)]
    p = progress(samples, bytes_total=None, items_total=200, bytes_done=0, items_done=50)
    assert (p.unit, p.percent, p.eta_seconds) == ("items", 25.0, 30.0)


def test_a_step_without_a_total_has_a_rate_but_no_percent() -> None:
    p = progress([Sample(0.0, 0, 0), Sample(4.0, 400, 1)], None, None, 400, 1)
    assert (p.unit, p.percent, p.rate, p.eta_seconds) == ("bytes", None, 100.0, None)


def test_a_total_estimated_too_low_shows_full_not_beyond() -> None:
    assert progress([], bytes_total=100, items_total=None, bytes_done=150, items_done=0).percent == 100.0


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (4.4, "4s"), (185, "3m05s"), (7620, "2h07m"), (273600, "3d04h")])
def test_durations_read_short(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_the_fold_keeps_the_totals_the_checkpoints_carry_and_the_rate_they_show() -> None:
    view = fold(
        "r1",
        stored(
            [
                *started(0),
                (10, cp(100, 1, bytes_total=1000, items_total=9)),
                (20, cp(300, 3, bytes_total=1000, items_total=9)),
            ]
        ),
    )
    step = view.steps["store"]
    assert (step.bytes_total, step.items_total) == (1000, 9)
    p = step.progress()
    assert p.percent == pytest.approx(30.0)
    assert p.rate == pytest.approx(15.0)  # 300 bytes in the 20 s since the step started
    assert p.eta_seconds == pytest.approx(700 / 15.0)
    assert view.current_step is step
    assert view.to_json()["steps"]["store"]["bytes_total"] == 1000


def test_a_log_written_before_totals_existed_folds_with_unknown_totals() -> None:
    old = stored([*started(0), (10, ev.CheckpointRecorded(step="store", cursor={}, bytes_done=100))])
    checkpoint = old[-1]
    legacy_data = {k: v for k, v in checkpoint.data.items() if k not in ("bytes_total", "items_total")}
    legacy = ev.StoredEvent(
        checkpoint.position, checkpoint.stream, checkpoint.version, "old", checkpoint.type, 1, legacy_data, at(10)
    )
    step = fold("r1", [*old[:-1], legacy]).steps["store"]
    assert (step.bytes_done, step.bytes_total, step.items_total) == (100, None, None)
    assert step.progress().percent is None


def test_time_the_run_spent_stopped_does_not_count_against_its_rate() -> None:
    view = fold(
        "r1",
        stored(
            [
                *started(0),
                (10, ev.CheckpointRecorded(step="store", cursor={}, bytes_done=100, bytes_total=1000)),
                (11, ev.RunInterrupted(reason="daemon stopping")),
                (11, ev.RunRequeued(reason="start-up")),
                (3000, ev.RunPreparing(attempt=1)),
                (3000, ev.RunStarted(plan=["store", "publish"])),
                (3010, ev.CheckpointRecorded(step="store", cursor={}, bytes_done=200, bytes_total=1000)),
            ]
        ),
    )
    assert view.steps["store"].progress().rate == pytest.approx(10.0)


def test_runs_shows_a_running_steps_percent_and_eta() -> None:
    view = fold("r1", stored([*started(0), (10, cp(250, bytes_total=1000)), (20, cp(500, bytes_total=1000))]))
    assert run_progress(view) == "store 50% ETA 20s"


def test_runs_shows_which_step_a_run_without_totals_is_on() -> None:
    events = [*started(0), (5, ev.StepCompleted(step="store")), (5, ev.StepStarted(step="publish"))]
    assert run_progress(fold("r1", stored(events))) == "publish (step 2/2)"


def test_a_hostile_step_name_reaches_the_terminal_escaped() -> None:
    events = [*started(0), (5, ev.StepStarted(step="dump:db.\x1b]0;pwned\x07coll"))]
    shown = run_progress(fold("r1", stored(events)))
    assert "\x1b" not in shown and "\x07" not in shown and "\\x1b]0;pwned\\x07" in shown


@pytest.mark.parametrize("total", [10**400, 2**63, -5], ids=["beyond-a-float", "beyond-int64", "negative"])
def test_a_forged_total_in_the_log_reads_as_unknown_and_crashes_no_view(total: int) -> None:
    # A total no step could have (a forged log, or a hostile manifest's stats taken as a
    # parent's figures): `runs`, `show` and `show --follow` print the run without it.
    view = fold("r1", stored([*started(0), (10, cp(250, 3, bytes_total=total, items_total=total)), (20, cp(500, 6))]))
    step = view.steps["store"]
    assert (step.bytes_total, step.items_total) == (None, None)
    assert run_progress(view) == "store (step 1/2)"
    assert describe(step, step.progress()) == "store running 500 B 25 B/s"


def test_a_forged_huge_amount_done_still_prints() -> None:
    assert human_bytes(10**400).endswith(" TiB")


def test_a_bidi_override_in_a_step_name_reaches_the_terminal_escaped() -> None:
    # U+202E turns the rest of a line around: `show --follow` escapes it as `status` does
    events = [*started(0), (5, ev.StepStarted(step="dump:db.\u202etxt.exe"))]
    view = fold("r1", stored(events))
    assert "\u202e" not in run_progress(view) and "\\u202e" in run_progress(view)
    assert "\u202e" not in describe(view.steps["dump:db.\u202etxt.exe"], view.steps["dump:db.\u202etxt.exe"].progress())


@pytest.mark.parametrize(
    "stats",
    [
        '{"bytes": Infinity, "files": 1}',
        '{"bytes": 1e400, "files": 1}',
        f'{{"bytes": {10**400}, "files": 1}}',
        '{"bytes": 5, "files": -9}',
    ],
    ids=["infinity", "float-infinity", "beyond-int64", "negative"],
)
def test_a_hostile_parent_manifests_figures_are_no_estimate(stats: str) -> None:
    # The repository's manifest is read with json, which takes Infinity: a backup whose parent
    # says so neither fails on it nor records it as its total.
    assert snapshot_totals(json.loads(stats)) is None
    assert snapshot_totals(json.loads('{"bytes": 5, "files": 2, "dirs": 1}')) == (5, 3)

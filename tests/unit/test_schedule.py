"""Scheduled jobs fire once per passed cron time; missed times collapse into one run."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from davit.daemon.config import RetrySection
from davit.daemon.retry import retry_at
from davit.domain.schedule import due_fire

T = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)


def test_a_nightly_job_defined_today_is_not_due_before_three() -> None:
    assert due_fire("0 3 * * *", since=T.replace(hour=1), now=T.replace(hour=2)) is None


def test_a_nightly_job_is_due_once_three_has_passed() -> None:
    assert due_fire("0 3 * * *", since=T.replace(hour=1), now=T.replace(hour=3, minute=0, second=5)) == T.replace(
        hour=3, minute=0, second=0
    )


def test_after_firing_it_is_not_due_again_the_same_night() -> None:
    fired = T.replace(hour=3, minute=0, second=0)
    assert due_fire("0 3 * * *", since=fired, now=T.replace(hour=3, minute=30)) is None


def test_a_week_of_missed_nights_gives_one_run_for_the_latest() -> None:
    since = T - timedelta(days=7)
    assert due_fire("0 3 * * *", since=since, now=T) == T.replace(hour=3, minute=0, second=0)


def test_retry_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetrySection(initial_seconds=10, max_seconds=60)
    rng = random.Random(1)
    waits = [(retry_at(policy, attempt, T, rng) - T).total_seconds() for attempt in range(1, 7)]
    assert 5 <= waits[0] <= 10 and 10 <= waits[1] <= 20 and 20 <= waits[2] <= 40
    assert all(30 <= w <= 60 for w in waits[3:])


# --- the timetable: next fires computed once, in a heap (issue 15, finding 3) ------------------


def test_the_timetable_gives_the_earliest_fire_and_what_is_due() -> None:
    from davit.domain.schedule import Timetable

    table = Timetable()
    table.plan("nightly", "0 3 * * *", since=T, now=T)
    table.plan("hourly", "0 * * * *", since=T, now=T)
    assert table.next_due() == T.replace(hour=13, minute=0, second=0)
    assert table.pop_due(T.replace(hour=12, minute=59)) == []
    assert table.pop_due(T.replace(hour=13, minute=0, second=1)) == [("hourly", T.replace(hour=13, minute=0, second=0))]
    assert table.next_due() == (T + timedelta(days=1)).replace(hour=3, minute=0, second=0)


def test_a_popped_job_is_not_due_again_until_its_fire_is_planned_or_postponed() -> None:
    from davit.domain.schedule import Timetable

    table = Timetable()
    table.plan("hourly", "0 * * * *", since=T, now=T)
    later = T.replace(hour=13, minute=5)
    [(name, at)] = table.pop_due(later)
    assert table.pop_due(later) == [] and table.next_due() is None
    table.postpone(name, later + timedelta(minutes=1))  # its fire could not be recorded: try again
    assert table.pop_due(later + timedelta(minutes=1)) == [("hourly", at)]
    table.plan("hourly", "0 * * * *", since=at, now=later)  # recorded: planned from it
    assert table.next_due() == T.replace(hour=14, minute=0, second=0)


def test_many_replans_and_drops_keep_one_live_entry_per_job() -> None:
    from davit.domain.schedule import Timetable

    table = Timetable()
    for round_ in range(50):
        for i in range(40):
            table.plan(f"job{i}", f"{i % 60} * * * *", since=T + timedelta(minutes=round_), now=T)
    for i in range(0, 40, 2):
        table.drop(f"job{i}")
    due = table.pop_due(T + timedelta(hours=3))
    assert sorted(n for n, _ in due) == sorted(f"job{i}" for i in range(1, 40, 2))
    assert len(table) == 0


# --- clocks (issue 15, finding 4) ----------------------------------------------------------------


def test_a_fire_recorded_a_year_ahead_does_not_block_the_next_night() -> None:
    """The clock was a year ahead when the job last fired, then corrected: the next night fires."""
    from davit.domain.schedule import Timetable

    table = Timetable()
    fired_while_ahead = (T + timedelta(days=365)).replace(hour=3, minute=0, second=0)
    lead = table.plan("nightly", "0 3 * * *", since=fired_while_ahead, now=T)
    assert lead is not None and lead > timedelta(days=364)
    next_night = (T + timedelta(days=1)).replace(hour=3, minute=0, second=0)
    assert table.next_due() == next_night
    assert table.pop_due(next_night + timedelta(seconds=1)) == [("nightly", next_night)]
    # the pure rule on its own refuses it, which is why the timetable counts from now
    assert due_fire("0 3 * * *", since=fired_while_ahead, now=next_night + timedelta(seconds=1)) is None


def test_a_fire_a_few_seconds_ahead_is_honoured_so_a_small_step_back_does_not_repeat_it() -> None:
    from davit.domain.schedule import Timetable

    table = Timetable()
    fired = T.replace(hour=3, minute=0, second=0)
    assert table.plan("nightly", "0 3 * * *", since=fired, now=fired - timedelta(seconds=3)) is None
    assert table.next_due() == fired + timedelta(days=1)


def test_the_clock_watch_reports_a_step_of_the_wall_clock_but_not_time_passing() -> None:
    from davit.daemon.scheduler import ClockWatch

    clock = FakeClock(T)
    watch = ClockWatch(clock)
    clock.advance(3600)
    assert watch.check() is None
    clock.step(-365 * 86400)
    step = watch.check()
    assert step is not None and abs(step + 365 * 86400) < 1
    clock.advance(10)
    assert watch.check() is None


def test_a_retry_recorded_on_a_clock_a_year_ahead_waits_at_most_the_policy_cap() -> None:
    from davit.daemon.scheduler import retry_delay

    assert retry_delay(T + timedelta(days=365), T, cap_seconds=600) == 600
    assert retry_delay(T + timedelta(seconds=30), T, cap_seconds=600) == 30
    assert retry_delay(T - timedelta(seconds=30), T, cap_seconds=600) == 0


class FakeClock:
    """A wall clock and a monotonic clock that tests move: `advance` moves both (time passes),
    `step` moves only the wall clock (NTP or an operator setting it)."""

    def __init__(self, wall: datetime) -> None:
        self.wall = wall
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)


def test_a_recorded_schedule_whose_day_never_comes_is_not_planned_instead_of_raising() -> None:
    """A job defined before its schedule was checked for a next fire (30 February) must not stop
    the scheduler (CroniterBadDateError escaped the planner and ended davitd)."""
    from davit.domain.schedule import Timetable

    table = Timetable()
    assert table.plan("never", "0 0 30 2 *", since=T, now=T) is None
    table.plan("nightly", "0 3 * * *", since=T, now=T)
    assert len(table) == 1 and table.plan_of("never") is None
    assert table.pop_due(T + timedelta(days=1)) == [("nightly", (T + timedelta(days=1)).replace(hour=3, minute=0, second=0))]


class _SimulatedNow(datetime):
    """`datetime` as daemon.scheduler sees it, with `now` at a simulated instant."""

    instant = datetime(2026, 1, 1, tzinfo=UTC)

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return cls.instant.astimezone(tz)


BACK = (datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 26, 12, tzinfo=UTC))  # clocks go back
FORWARD = (datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC))  # and forward


@pytest.mark.parametrize(
    ("schedule", "night", "expected"),
    [
        ("0 3 * * *", BACK, ["25 03:00", "26 03:00"]),
        ("0 3 * * *", FORWARD, ["29 03:00", "30 03:00"]),
        ("30 2 * * *", BACK, ["25 02:30", "26 02:30"]),  # once, though 02:30 comes twice
        ("30 2 * * *", FORWARD, ["29 03:30", "30 02:30"]),  # 02:30 never comes: once, as +01:00 places it
        ("15 1-4 * * *", BACK, ["25 01:15", "25 02:15", "25 03:15", "25 04:15", "26 01:15", "26 02:15", "26 03:15", "26 04:15"]),
    ],
)
def test_scheduled_jobs_fire_once_per_cron_time_in_local_time_on_the_nights_the_clocks_change(
    monkeypatch: pytest.MonkeyPatch, schedule: str, night: tuple[datetime, datetime], expected: list[str]
) -> None:
    """The system clock's `now` carried the UTC offset of its instant, fixed, so a fire planned
    before a daylight-saving change kept the old offset: on the night the clocks went back the
    nightly job ran twice (02:00 and 03:00), on the night they went forward at 04:00. The real
    SystemClock in TZ=Europe/Berlin, read minute by minute as the scheduler does (only the
    instant `datetime.now` answers is simulated)."""
    from davit.daemon import scheduler
    from davit.domain.schedule import Timetable

    try:
        berlin = ZoneInfo("Europe/Berlin")
    except ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    monkeypatch.setattr(scheduler, "datetime", _SimulatedNow)
    try:
        clock = scheduler.SystemClock()
        start, end = night
        _SimulatedNow.instant = start
        table = Timetable()
        table.plan("job", schedule, since=clock.now(), now=clock.now())
        fired: list[str] = []
        while _SimulatedNow.instant < end:
            now = clock.now()
            for name, at in table.pop_due(now):
                fired.append(now.astimezone(berlin).strftime("%d %H:%M"))
                table.plan(name, schedule, since=at, now=now)
            _SimulatedNow.instant += timedelta(minutes=1)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert fired == expected


def test_the_hour_the_clocks_go_back_is_not_a_step_of_the_wall_clock() -> None:
    """Two readings in one zone differ by their wall times, which jump back an hour at the
    change: ClockWatch saw a step of -3600 s (a false ClockMoved and a replan) every autumn."""
    from davit.daemon.scheduler import ClockWatch

    berlin = ZoneInfo("Europe/Berlin")
    clock = FakeClock(datetime(2026, 10, 25, 0, 59, tzinfo=UTC).astimezone(berlin))  # 02:59 CEST
    watch = ClockWatch(clock)
    clock.wall = datetime(2026, 10, 25, 1, 1, tzinfo=UTC).astimezone(berlin)  # 02:01 CET, two minutes later
    clock.mono += 120
    assert watch.check() is None

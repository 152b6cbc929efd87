"""Scheduled jobs fire once per passed cron time; missed times collapse into one run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from daemon.config import RetrySection
from daemon.retry import retry_at
from domain.schedule import due_fire

T = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)


def test_a_nightly_job_defined_today_is_not_due_before_three() -> None:
    assert due_fire("0 3 * * *", since=T.replace(hour=1), now=T.replace(hour=2)) is None


def test_a_nightly_job_is_due_once_three_has_passed() -> None:
    assert due_fire("0 3 * * *", since=T.replace(hour=1), now=T.replace(hour=3, minute=0, second=5)) == \
        T.replace(hour=3, minute=0, second=0)


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

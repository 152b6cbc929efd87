"""Retention policies: which snapshots survive (the union of the rules)."""

from __future__ import annotations

from davit.domain.jobs import Retention
from davit.domain.retention import snapshots_to_keep

SNAPS = [
    ("a", "2026-01-01T03:00:00+00:00"),
    ("b", "2026-01-01T15:00:00+00:00"),
    ("c", "2026-01-02T03:00:00+00:00"),
    ("d", "2026-01-09T03:00:00+00:00"),
    ("e", "2026-02-01T03:00:00+00:00"),
    ("f", "2026-02-01T04:00:00+00:00"),
]


def test_an_empty_policy_keeps_everything() -> None:
    assert snapshots_to_keep(SNAPS, Retention()) == {s for s, _ in SNAPS}


def test_keep_last_keeps_the_newest() -> None:
    assert snapshots_to_keep(SNAPS, Retention(keep_last=2)) == {"e", "f"}


def test_keep_daily_keeps_the_newest_of_each_recent_day() -> None:
    assert snapshots_to_keep(SNAPS, Retention(keep_daily=3)) == {"f", "d", "c"}


def test_keep_weekly_and_monthly_use_iso_weeks_and_calendar_months() -> None:
    assert snapshots_to_keep(SNAPS, Retention(keep_weekly=2)) == {"f", "d"}
    assert snapshots_to_keep(SNAPS, Retention(keep_monthly=2)) == {"f", "d"}


def test_rules_combine_as_a_union() -> None:
    assert snapshots_to_keep(SNAPS, Retention(keep_last=2, keep_monthly=2)) == {"f", "e", "d"}

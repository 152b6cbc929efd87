"""An S3 request's read timeout is bounded by the repository's retry budget (obstore checks the
budget only between attempts: a request to a silent server otherwise waited the full 30 s)."""

from __future__ import annotations

from datetime import timedelta

from davit.adapters.repository.backends.s3 import read_timeout


def test_a_budget_shorter_than_the_read_timeout_bounds_it() -> None:
    assert read_timeout(5) == timedelta(seconds=5)
    assert read_timeout(2.5) == timedelta(seconds=2.5)


def test_the_default_budget_keeps_the_30_s_read_timeout() -> None:
    assert read_timeout(60) == timedelta(seconds=30)
    assert read_timeout(3600) == timedelta(seconds=30)


def test_a_tiny_budget_still_lets_a_live_server_pause_a_second() -> None:
    assert read_timeout(0.1) == timedelta(seconds=1)

"""The log checks of the thirty-jobs e2e test (tests/e2e/test_thirty_jobs_three_daemons.py), on
the runs' event sequences they must accept and refuse. The case CI met once: the killed daemon
had claimed a run still queued in the log (in its `prepare`; RunPreparing goes to the log with
RunStarted), and another daemon's claim, naming it, took the run over a lease later, with no
interruption to record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.test_thirty_jobs_three_daemons import LEASE, Event, assert_one_holder_at_a_time, check_run

T0 = datetime(2026, 12, 7, 21, 50, 44, tzinfo=UTC)


def event(position: int, kind: str, seconds: float, **data: Any) -> Event:
    return (position, "run-1", kind, data, (T0 + timedelta(seconds=seconds)).isoformat())


def queued_claim_taken_over(after: float) -> list[Event]:
    return [
        event(1, "RunQueued", 0.0),
        event(2, "RunClaimed", 0.5, owner="e-thirty-c", token="t-c"),
        event(3, "RunClaimed", 0.5 + after, owner="e-thirty-b", token="t-b", taken_from="e-thirty-c"),
        event(4, "RunPreparing", 0.6 + after),
        event(5, "RunStarted", 0.6 + after),
        event(6, "StepStarted", 0.7 + after, lease="t-b"),
        event(7, "StepCompleted", 0.8 + after, lease="t-b"),
        event(8, "RunVerifying", 0.9 + after),
        event(9, "RunSucceeded", 0.9 + after),
    ]


def test_a_queued_run_the_killed_daemon_claimed_is_taken_over_by_a_claim_naming_it_a_lease_later() -> None:
    events = queued_claim_taken_over(LEASE + 0.1)
    claims = assert_one_holder_at_a_time("run-1", events)
    assert [(c["owner"], c["taken_from"]) for c in claims] == [("e-thirty-c", None), ("e-thirty-b", "e-thirty-c")]
    killed_at = (T0 + timedelta(seconds=0.6)).timestamp()
    delay = check_run("copy-03", events, "e-thirty-c", killed_at, {"run-1": "copy-03"})
    assert delay == pytest.approx(LEASE, abs=0.1)


def test_a_claim_taking_a_run_before_its_holders_lease_lapsed_is_refused() -> None:
    with pytest.raises(AssertionError, match="after"):
        assert_one_holder_at_a_time("run-1", queued_claim_taken_over(LEASE / 2))


def test_a_claim_over_a_live_holder_that_does_not_name_it_is_refused() -> None:
    events = queued_claim_taken_over(LEASE + 0.1)
    position, stream, kind, data, recorded = events[2]
    events[2] = (position, stream, kind, {**data, "taken_from": None}, recorded)
    with pytest.raises(AssertionError, match="still held it"):
        assert_one_holder_at_a_time("run-1", events)

"""The supervisor's start-up recovery, retries and requests, driven on the in-memory event log
(`davit/eventstore/memory.py`) with an injected clock: no file log, no subprocess, no run
executed (the dispatcher is not started). The log is seeded with what a previous davitd left
(a run cut off while it worked, a run waiting for its retry); the supervisor's own methods
then do what davitd does at start-up and in its loops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from davit.daemon.bootstrap import Parts
from davit.daemon.cli.requests import send
from davit.daemon.config import load_settings
from davit.daemon.notify import Notifier
from davit.daemon.recorder import RunRecorder
from davit.daemon.supervisor import Supervisor
from davit.domain import events as ev
from davit.domain.commands import RunJobNow
from davit.domain.machine import RunState
from davit.domain.ports import LogReader
from davit.domain.runs import fold
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_schedule import FakeClock

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
SPEC = {"name": "nightly", "kind": "files.backup", "source": {"path": "/srv"}}


@asynccontextmanager
async def supervisor(tmp_path: Path, store: MemoryEventStore, clock: FakeClock) -> AsyncIterator[Supervisor]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    settings = load_settings(home)
    sup = Supervisor(Parts(settings), store, Notifier(), "test", clock=clock)
    try:
        yield sup
    finally:
        sup.parts.close()


async def seed_run(store: MemoryEventStore, run_id: str, *events: ev.Event) -> None:
    """A run of job `nightly` as a previous davitd recorded it: queued, then `events`."""
    queued = ev.RunQueued(run_id=run_id, job="nightly", kind="files.backup", revision="r1", spec=SPEC, reason="schedule")
    await store.append(ev.run_stream(run_id), 0, [ev.NewEvent.of(f"{run_id}-0", queued)])
    recorder = await RunRecorder.load(store, run_id)
    if events:
        await recorder.record(*events)


async def types(store: LogReader, run_id: str) -> list[str]:
    return [e.type for e in await store.read_stream(ev.run_stream(run_id))]


PREPARING: tuple[ev.Event, ...] = (ev.RunPreparing(),)
RUNNING: tuple[ev.Event, ...] = (*PREPARING, ev.RunStarted(plan=["store"]))
VERIFYING: tuple[ev.Event, ...] = (*RUNNING, ev.RunVerifying())


@pytest.mark.parametrize(
    ("left", "recorded"),
    [
        (PREPARING, ["RunInterrupted", "RunRequeued"]),
        (RUNNING, ["RunInterrupted", "RunRequeued"]),
        (VERIFYING, ["RunInterrupted", "RunRequeued"]),
        ((*RUNNING, ev.RunInterrupted(reason="signal")), ["RunRequeued"]),
        ((*VERIFYING, ev.RunSucceeded(summary={})), []),
    ],
    ids=["preparing", "running", "verifying", "interrupted-at-shutdown", "succeeded"],
)
def test_a_run_a_dead_daemon_left_is_recorded_interrupted_and_requeued_at_start_up(
    tmp_path: Path, left: tuple[ev.Event, ...], recorded: list[str]
) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        await seed_run(store, "r1", *left)
        before = await types(store, "r1")
        async with supervisor(tmp_path, store, FakeClock(NOW)) as sup:
            await sup._load()
            await sup._recover()
            assert await types(store, "r1") == before + recorded
            assert sup.runs["r1"] == fold("r1", await store.read_stream(ev.run_stream("r1")))  # state is the fold
            if recorded:
                assert sup.runs["r1"].state is RunState.QUEUED
            if "RunInterrupted" in recorded:
                [interrupted] = [e for e in await store.read_stream(ev.run_stream("r1")) if e.type == "RunInterrupted"]
                assert "at start-up" in interrupted.data["reason"]
            await sup._recover()  # a second start finds it queued: nothing more is recorded
            assert await types(store, "r1") == before + recorded

    anyio.run(main)


async def seed_waiting_retry(store: MemoryEventStore, retry_at: datetime) -> None:
    failed = ev.RunWaitingRetry(error="peer busy", error_type="PeerBusy", attempt=1, retry_at=retry_at.isoformat())
    await seed_run(store, "r1", *RUNNING, failed)


async def retry_at(sup: Supervisor, clock: FakeClock, seconds: float) -> list[str]:
    """Move both clocks by `seconds`, let the scheduler fire what is due; the run's event types."""
    clock.advance(seconds)
    await sup._retry_due()
    return await types(sup.store, "r1")


def test_a_run_waiting_to_retry_is_requeued_once_its_backoff_has_passed_not_before(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_waiting_retry(store, NOW + timedelta(seconds=30))
        async with supervisor(tmp_path, store, clock) as sup:
            await sup._load()
            await sup._recover()
            assert sup._seconds_to_next() == pytest.approx(30)  # the scheduler sleeps until then
            assert (await retry_at(sup, clock, 29))[-1] == "RunWaitingRetry"
            assert (await retry_at(sup, clock, 1))[-1] == "RunRequeued"
            assert sup.runs["r1"].state is RunState.QUEUED
            [requeued] = await store.read_stream(ev.run_stream("r1"), sup.runs["r1"].version)
            assert requeued.data["reason"] == "retry after PeerBusy"
            assert (await retry_at(sup, clock, 3600))[-2:] == ["RunWaitingRetry", "RunRequeued"]  # once

    anyio.run(main)


def test_a_retry_recorded_while_the_clock_was_a_year_ahead_waits_no_longer_than_the_policy_cap(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_waiting_retry(store, NOW + timedelta(days=365))
        async with supervisor(tmp_path, store, clock) as sup:
            cap = sup.settings.model.retry.max_seconds
            assert cap < 365 * 86400
            await sup._load()
            await sup._recover()
            assert sup._seconds_to_next() == pytest.approx(min(cap, 60.0))  # (the scheduler wakes at least each minute)
            assert (await retry_at(sup, clock, cap - 1))[-1] == "RunWaitingRetry"
            assert (await retry_at(sup, clock, 1))[-1] == "RunRequeued"

    anyio.run(main)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


def test_a_request_to_run_an_unknown_job_ends_that_run_failed_and_is_marked_handled(tmp_path: Path) -> None:
    """The CLI's `davit run` appends a request (`send`); the supervisor's request loop, reading
    the same log, records the run failed with the reason and the requests it handled."""

    async def main() -> None:
        store = MemoryEventStore()
        async with supervisor(tmp_path, store, FakeClock(NOW)) as sup:
            await sup._load()
            position = await send(store, RunJobNow(job="weekly", run_id="r9"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup._requests_loop)
                await until(lambda: "r9" in sup.runs and sup.requests_after >= position)
                tg.cancel_scope.cancel()
            assert sup.runs["r9"].state is RunState.FAILED
            [failed] = [e for e in await store.read_stream(ev.run_stream("r9")) if e.type == "RunFailed"]
            assert failed.data["error"] == "no job named 'weekly' is defined"
            handled = [e.data["upto_position"] async for e in store.iter_all(stream_prefix=ev.DAEMON_STREAM)]
            assert handled == [position]

    anyio.run(main)

"""The supervisor's scheduler against an injected clock (issue 15, finding 4): a fire recorded
while the wall clock was a year ahead does not stop the job once the clock is set back, and
the step is recorded as `ClockMoved`. Real parts: a davit home, the SQLite log (stamped with the
same fake clock) and a job file; only the clock is fake, and no run is executed (the dispatcher
is not started)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.eventstore.sqlite import SqliteEventStore
from tests.unit.test_schedule import FakeClock

REAL = datetime(2026, 3, 10, 2, 59, 0, tzinfo=UTC)
AHEAD = REAL + timedelta(days=365)


def events(db: Path, type_: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [json.loads(d) for (d,) in conn.execute("SELECT data FROM events WHERE type = ? ORDER BY position", (type_,))]
    finally:
        conn.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def test_a_fire_made_while_the_clock_was_a_year_ahead_does_not_stop_the_job_after_correction(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()  # load_settings refuses a --home that names nothing (finding 6)
    settings = load_settings(home)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    (settings.jobs_dir / "nightly.toml").write_text(
        f'name = "nightly"\nkind = "files.backup"\nschedule = "0 3 * * *"\n[source]\npath = "{tmp_path}"\n'
    )
    clock = FakeClock(AHEAD)  # the machine's clock is a year ahead
    db = settings.db_path

    def fires() -> list[str]:
        return [e["scheduled_for"] for e in events(db, "JobRunTriggered") if e["reason"] == "schedule"]

    async def main() -> None:
        async with SqliteEventStore(db, clock=lambda: clock.now().isoformat()) as store:
            sup = Supervisor(Parts(settings), store, Notifier(), "test", clock=clock)
            await sup._load()
            await sup._sync_jobs()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup._schedule_loop)
                clock.advance(120)  # 03:01 on the wrong clock: the job fires for 03:00 a year ahead
                sup.schedule_changed.set()
                await until(lambda: len(fires()) == 1, "the fire on the clock that is ahead")
                assert datetime.fromisoformat(fires()[0]) == AHEAD.replace(hour=3, minute=0)

                clock.step(-365 * 86400 - 90)  # NTP sets it right: 02:59:30, a year earlier
                clock.advance(1)
                sup.schedule_changed.set()
                await until(lambda: bool(events(db, "ClockMoved")), "ClockMoved")
                [moved] = events(db, "ClockMoved")
                assert moved["seconds"] < -364 * 86400 and "back" in moved["detail"]

                clock.advance(60)  # 03:00:31 on the right clock: the job fires again
                sup.schedule_changed.set()
                await until(lambda: len(fires()) == 2, "the fire after the clock was set back")
                assert datetime.fromisoformat(fires()[1]) == REAL.replace(hour=3, minute=0)
                tg.cancel_scope.cancel()
            sup.parts.close()

    anyio.run(main)

"""A real davitd whose log holds a fire recorded while the clock was a year ahead (issue 15,
finding 4): today's main never fires the job again until that date comes round, silently. Now
the daemon says the clock moved (`ClockMoved`) at start-up and fires at the next cron time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from davit.daemon.config import load_settings
from davit.daemon.jobs import JobRegistry
from davit.domain import events as ev
from davit.eventstore.logkey import read_log_key
from davit.eventstore.sqlite import SqliteEventStore
from tests.e2e.conftest import Davit, write_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def seed_fire_a_year_ahead(home: Path, job: str) -> datetime:
    settings = load_settings(home)
    key = read_log_key(settings.log_key_path)  # the log is keyed: davitd made the key at its first start
    ahead = (datetime.now(UTC) + timedelta(days=365)).replace(second=0, microsecond=0)

    async def go() -> None:
        async with SqliteEventStore(settings.db_path, key=key) as store:
            registry = JobRegistry(store)
            await registry.load()
            state = registry.jobs[job]
            await registry.append(
                job,
                ev.JobRunTriggered(
                    run_id="fired-while-ahead", revision=state.revision, reason="schedule", scheduled_for=ahead.isoformat()
                ),
            )

    asyncio.run(go())
    return ahead


def test_a_fire_recorded_a_year_ahead_does_not_stop_the_schedule_after_a_restart(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    write_job(
        davit,
        "minutely.toml",
        # every 10 s (croniter's sixth field is the second): the next cron time comes ~5 s after
        # the correction, not ~30 s as every minute's did; the year-ahead fire holds it back the same
        f'name = "minutely"\nkind = "files.backup"\nschedule = "* * * * * */10"\n[source]\npath = "{source}"\n',
    )
    davit.start()
    davit.wait_for(lambda: bool(davit.events("type = 'JobDefined'")), 30, "JobDefined")
    davit.stop()
    ahead = seed_fire_a_year_ahead(davit.home, "minutely")

    davit.start()
    davit.wait_for(lambda: bool(davit.events("type = 'ClockMoved'")), 15, "ClockMoved at start-up", poll=0.2)
    [(_, stream, _, moved)] = davit.events("type = 'ClockMoved'")
    assert stream == "daemon" and moved["jobs"] == ["minutely"] and moved["seconds"] < -364 * 86400

    def fired_after_correction() -> bool:
        return any(
            e[3]["reason"] == "schedule" and datetime.fromisoformat(e[3]["scheduled_for"]) < ahead
            for e in davit.events("type = 'JobRunTriggered'")
            if e[3]["run_id"] != "fired-while-ahead" and e[0] > moved_position
        )

    moved_position = davit.events("type = 'ClockMoved'")[0][0]
    davit.wait_for(fired_after_correction, 75, "a scheduled fire after the correction", poll=0.5)

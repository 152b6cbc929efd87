"""`davit daemons forget OLD` run while OLD was alive but paused (SIGSTOP longer than the 15 s
the command waits for): its jobs are retired under it. Once continued, OLD's files still
define them: its next pass over its directory must define them again, not leave them retired
until its files change or it restarts."""

from __future__ import annotations

from pathlib import Path

import anyio

from davit.daemon.jobs import JobRegistry
from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.eventstore.memory import MemoryEventStore


def test_a_paused_daemons_jobs_forgotten_under_it_are_defined_again_at_its_next_pass(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        (jobs / "docs.toml").write_text('name = "docs"\nkind = "files.backup"\n[source]\npath = "/srv/docs"\n')
        old = JobRegistry(store)
        old.daemon_name = "old"
        await old.load()
        assert await old.sync_directory(jobs) == ["docs"]
        # `forget old` (what davit/daemon/cli/forget.py appends) while old is paused
        other = JobRegistry(store)
        await other.load()
        (job,) = [j for j in other.active() if j.daemon == "old"]
        retired = ev.JobRetired(name=job.name, file=job.file, reason="daemon old forgotten")
        await store.append_atomic(
            [ev.StreamAppend(ev.job_stream(job.name), job.version, (ev.NewEvent.of(new_event_id(), retired),))]
        )
        # old continues: it follows the log, then passes over its directory
        for stored in await store.read_all(0, 1000, "job-"):
            await old.follow(stored)
        assert old.by_name("docs") is None
        assert await old.sync_directory(jobs) == ["docs"]
        active = old.by_name("docs")
        assert active is not None and active.daemon == "old"

    anyio.run(main)

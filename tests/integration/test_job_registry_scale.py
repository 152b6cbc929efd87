"""The job registry at scale (issue 15, finding 3): syncing reads only the files that changed,
looks jobs up by file and name without a pass over every job, and defines many dropped files
in few transactions. Counted, not timed: real files, a real SQLite log, `load_job_file` and the
store's `append_atomic` wrapped to count their calls."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import davit.daemon.jobs as jobs_module
from davit.daemon.jobfiles import LoadedJobFile, load_job_file
from davit.daemon.jobs import JobRegistry
from davit.eventstore.sqlite import SqliteEventStore


def body(name: str, keep: int = 3) -> str:
    return (
        f'name = "{name}"\nkind = "files.backup"\nschedule = "0 3 * * *"\n[source]\npath = "/srv"\n'
        f"[retention]\nkeep_last = {keep}\n"
    )


def drop(jobs_dir: Path, file: str, text: str) -> None:
    tmp = jobs_dir / f".{file}.tmp"
    tmp.write_text(text)
    os.rename(tmp, jobs_dir / file)


def named(registry: JobRegistry, name: str) -> Any:
    """The active job called `name` (through `active()`, which every version of the registry has)."""
    return next((j for j in registry.active() if j.name == name), None)


class Counted:
    def __init__(self) -> None:
        self.reads: list[str] = []
        self.appends = 0


def with_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, go: Callable[[JobRegistry, Path, Counted], Coroutine[Any, Any, None]]
) -> None:
    counted = Counted()

    def counting_load(path: Path, jobs_dir: Path) -> LoadedJobFile:
        counted.reads.append(path.name)
        return load_job_file(path, jobs_dir)

    monkeypatch.setattr(jobs_module, "load_job_file", counting_load)
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()

    async def main() -> None:
        async with SqliteEventStore(tmp_path / "state" / "davit.db") as store:
            real_append = store.append_atomic

            async def counting_append(parts: Any, **kwargs: Any) -> list[int]:
                counted.appends += 1
                return await real_append(parts, **kwargs)

            store.append_atomic = counting_append  # type: ignore[method-assign]
            registry = JobRegistry(store)
            await registry.load()
            await go(registry, jobs_dir, counted)

    asyncio.run(main())


def test_a_sync_after_one_file_changed_reads_that_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go(registry: JobRegistry, jobs_dir: Path, counted: Counted) -> None:
        for i in range(50):
            drop(jobs_dir, f"job{i:02d}.toml", body(f"job{i:02d}"))
        await registry.sync_directory(jobs_dir)
        assert len(counted.reads) == 50 and len(registry.active()) == 50

        counted.reads.clear()
        await registry.sync_directory(jobs_dir)
        assert counted.reads == []  # the reconcile only stat()s unchanged files

        drop(jobs_dir, "job07.toml", body("job07", keep=9))
        await registry.sync_directory(jobs_dir)
        assert counted.reads == ["job07.toml"]
        job = named(registry, "job07")
        assert job is not None and job.spec["retention"]["keep_last"] == 9

        counted.reads.clear()
        drop(jobs_dir, "job08.toml", body("job08", keep=8))
        await registry.sync_paths(jobs_dir, ["job08.toml", ".job08.toml.tmp"])  # as the watcher reports them
        assert counted.reads == ["job08.toml"]

    with_registry(tmp_path, monkeypatch, go)


def test_a_removed_file_retires_its_job_without_reading_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go(registry: JobRegistry, jobs_dir: Path, counted: Counted) -> None:
        for i in range(20):
            drop(jobs_dir, f"job{i:02d}.toml", body(f"job{i:02d}"))
        await registry.sync_directory(jobs_dir)
        counted.reads.clear()
        (jobs_dir / "job03.toml").unlink()
        await registry.sync_paths(jobs_dir, ["job03.toml"])
        (jobs_dir / "job04.toml").unlink()  # one the watcher missed: the reconcile finds it
        await registry.sync_directory(jobs_dir)
        assert counted.reads == []
        assert registry.by_name("job03") is None and registry.by_name("job04") is None
        assert registry.jobs["job03"].retired and registry.by_file(str(jobs_dir / "job04.toml")) is None
        assert registry.active_count() == 18

    with_registry(tmp_path, monkeypatch, go)


def test_defining_many_files_makes_no_pass_over_every_job_and_few_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's main looked up each file's job with a scan of every job (O(n^2)) and appended
    each definition in its own transaction."""
    passes = []
    real_active = JobRegistry.active

    def counting_active(self: JobRegistry) -> list[Any]:
        passes.append(1)
        return real_active(self)

    monkeypatch.setattr(JobRegistry, "active", counting_active)

    async def go(registry: JobRegistry, jobs_dir: Path, counted: Counted) -> None:
        for i in range(600):
            drop(jobs_dir, f"job{i:03d}.toml", body(f"job{i:03d}"))
        defined = await registry.sync_directory(jobs_dir)
        assert len(defined) == 600 and len(registry.jobs) == 600
        assert passes == []
        assert counted.appends <= 600 // jobs_module.BATCH_STREAMS + 1
        # what was stored is what the registry holds: a fresh registry folds the same jobs
        fresh = JobRegistry(registry.log)
        await fresh.load()
        assert {j.name: (j.file, j.revision) for j in fresh.jobs.values()} == {
            j.name: (j.file, j.revision) for j in registry.jobs.values()
        }

    with_registry(tmp_path, monkeypatch, go)


def test_a_file_refused_for_a_taken_name_is_defined_once_the_owner_file_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go(registry: JobRegistry, jobs_dir: Path, counted: Counted) -> None:
        drop(jobs_dir, "a.toml", body("shared"))
        drop(jobs_dir, "b.toml", body("shared", keep=5))
        await registry.sync_directory(jobs_dir)
        owner = registry.by_name("shared")
        assert owner is not None and owner.file == str(jobs_dir / "a.toml")
        assert str(jobs_dir / "b.toml") in registry.rejected

        (jobs_dir / "a.toml").unlink()
        await registry.sync_paths(jobs_dir, ["a.toml"])  # the watcher reports only a.toml
        owner = registry.by_name("shared")
        assert owner is not None and owner.file == str(jobs_dir / "b.toml")
        assert owner.spec["retention"]["keep_last"] == 5

    with_registry(tmp_path, monkeypatch, go)


def test_a_renamed_job_retires_the_old_name_and_defines_the_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go(registry: JobRegistry, jobs_dir: Path, counted: Counted) -> None:
        drop(jobs_dir, "a.toml", body("old"))
        drop(jobs_dir, "b.toml", body("other"))
        await registry.sync_directory(jobs_dir)
        drop(jobs_dir, "a.toml", body("new"))
        drop(jobs_dir, "b.toml", body("old"))  # takes the name a.toml gives up, in the same sync
        await registry.sync_directory(jobs_dir)
        new, old = named(registry, "new"), named(registry, "old")
        assert new is not None and new.file == str(jobs_dir / "a.toml")
        assert old is not None and old.file == str(jobs_dir / "b.toml")
        assert named(registry, "other") is None and len(registry.active()) == 2
        assert registry.by_file(str(jobs_dir / "a.toml")) is new

    with_registry(tmp_path, monkeypatch, go)

"""A daemon that has just started imports the modules of its jobs' kinds in a thread (issue 18:
Weaviate's client takes about a second). A run dispatched meanwhile waits, queued, until that
import has ended, instead of starting and then waiting for it inside its own stages (where
every Weaviate run of a fresh davitd paid about a second of "preparing").

Real parts: a davit home, the SQLite log, a job file and the supervisor's own preloading and
dispatch loops; the only change is a slower import (half a second added to the real one), so
that the order is visible."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from davit.daemon import supervisor as supervisor_module
from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.daemon.kinds import preload as real_preload
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.eventstore.sqlite import SqliteEventStore

SLOW_IMPORT = 0.5


def recorded(db: Path, type_: str) -> list[float]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT recorded_at FROM events WHERE type = ? ORDER BY position", (type_,))
        return [datetime.fromisoformat(at).timestamp() for (at,) in rows]
    finally:
        conn.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def test_a_run_of_a_just_started_daemon_is_prepared_after_its_kind_was_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("some data\n")
    settings = load_settings(home)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    job = f'name = "once"\nkind = "files.backup"\n[source]\npath = "{tmp_path / "tree"}"\n'
    (settings.jobs_dir / "once.toml").write_text(job)
    imported: dict[str, float] = {}

    def slow_preload(kind: str) -> None:
        time.sleep(SLOW_IMPORT)
        real_preload(kind)
        imported[kind] = time.time()

    monkeypatch.setattr(supervisor_module, "preload", slow_preload)
    db = settings.db_path

    async def main() -> None:
        async with SqliteEventStore(db) as store:
            sup = Supervisor(Parts(settings), store, Notifier(), "test")
            await sup._load()
            await sup._sync_jobs()  # the job is defined and its run queued, as at a daemon's start
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup._preload_kinds)
                tg.start_soon(sup._dispatch_loop, tg)
                await until(lambda: bool(recorded(db, "RunSucceeded") or recorded(db, "RunFailed")), "the run's end")
                tg.cancel_scope.cancel()
            sup.parts.close()

    anyio.run(main)
    assert recorded(db, "RunSucceeded"), "the backup run did not succeed"
    [preparing] = recorded(db, "RunPreparing")
    [queued] = recorded(db, "RunQueued")
    assert preparing >= imported["files.backup"] - 0.01  # (the log's clock and time.time() are the same clock)
    assert preparing - queued >= SLOW_IMPORT - 0.05  # it waited, queued, for the import


def test_a_kind_whose_preload_fails_still_runs_its_queued_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken client library (its import raises) must not leave the runs of its kind queued
    for ever: the run is dispatched once the preload has failed, and imports (or fails) itself."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("some data\n")
    settings = load_settings(home)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    (settings.jobs_dir / "once.toml").write_text(
        f'name = "once"\nkind = "files.backup"\n[source]\npath = "{tmp_path / "tree"}"\n'
    )

    def broken_preload(kind: str) -> None:
        raise ImportError(f"No module named 'broken_{kind}'")

    monkeypatch.setattr(supervisor_module, "preload", broken_preload)
    db = settings.db_path

    async def main() -> None:
        async with SqliteEventStore(db) as store:
            sup = Supervisor(Parts(settings), store, Notifier(), "test")
            await sup._load()
            await sup._sync_jobs()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup._preload_kinds)
                tg.start_soon(sup._dispatch_loop, tg)
                await until(lambda: bool(recorded(db, "RunSucceeded") or recorded(db, "RunFailed")), "the run's end")
                tg.cancel_scope.cancel()
            sup.parts.close()

    anyio.run(main)
    assert recorded(db, "RunSucceeded"), "the run did not import its kind itself"

"""The event log on a file system that fills up: typed errors naming the state directory, appends
that wait for room and land once, and a run whose checkpoint cannot be recorded stopping there
and resuming from it.

Mounts a tiny tmpfs, so it needs root (CI runs as root; locally it skips without it); the
file-size limit case runs in a subprocess with `RLIMIT_FSIZE` and needs nothing special.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from davit.daemon import executor as ex
from davit.daemon.config import RetrySection
from davit.daemon.loghealth import LogHealth
from davit.daemon.notify import Notifier
from davit.daemon.recorder import RunRecorder, new_event_id
from davit.domain import events as ev
from davit.domain.errors import EventLogFull, EventLogStop, StorageFull
from davit.domain.machine import RunState
from davit.domain.ports import RunContext
from davit.domain.runs import fold
from davit.eventstore.logkey import create_log_key
from davit.eventstore.sqlite import SqliteEventStore, log_head
from tests.fixtures.fullfs import fill, mounted_tmpfs


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    with mounted_tmpfs(mountpoint, "size=2m"):
        yield mountpoint


def thing(**data: object) -> ev.NewEvent:
    return ev.NewEvent(new_event_id(), "Thing", dict(data))


def test_an_append_to_a_full_disk_is_storage_full_naming_the_state_directory_and_lands_once_room_is_made(tiny_fs: Path) -> None:
    state = tiny_fs / "state"

    async def go() -> None:
        async with SqliteEventStore(state / "davit.db") as store:
            await store.append("s", 0, [thing(n=1)])
            filler = fill(tiny_fs)
            second = [thing(n=2, pad="x" * 3000)]
            with pytest.raises(StorageFull) as err:
                await store.append("s", 1, second)
            assert isinstance(err.value, EventLogFull)
            assert str(state) in str(err.value) and "no space left" in str(err.value)
            assert "INSERT" not in str(err.value), "the SQL and its parameters stay out of the message"
            assert await store.head_position() == 1
            filler.unlink()
            [position] = await store.append("s", 1, second)
            # the same append again (a retry after a lost acknowledgement) is a replay
            assert await store.append("s", 1, second) == [position]
            assert [e.data["n"] for e in await store.read_stream("s")] == [1, 2]
            assert (await store.verify_chain()).ok

    anyio.run(go)


def test_a_write_past_the_file_size_limit_is_storage_full_too(tmp_path: Path) -> None:
    """`ulimit -f`: SQLite sees EFBIG as a plain I/O error; davit still calls it a full log."""
    script = textwrap.dedent(f"""
        import json, resource, sys, anyio
        from pathlib import Path
        from davit.domain.events import NewEvent
        from davit.eventstore.sqlite import SqliteEventStore

        async def go():
            async with SqliteEventStore(Path({str(tmp_path / "state" / "davit.db")!r})) as store:
                await store.append("s", 0, [NewEvent("e0", "Thing", {{"n": 0}})])
                resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
                try:
                    for i in range(1, 500):
                        await store.append("s", i, [NewEvent(f"e{{i}}", "Thing", {{"pad": "x" * 2000}})])
                except Exception as exc:
                    print(json.dumps({{"type": type(exc).__name__, "bases": [c.__name__ for c in type(exc).__mro__],
                                      "message": str(exc)}}))
                    return
                print(json.dumps({{"type": None}}))

        anyio.run(go)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["type"] == "EventLogFull" and "StorageFull" in outcome["bases"], outcome
    assert "file-size limit" in outcome["message"] and str(tmp_path / "state") in outcome["message"]


def test_with_a_log_health_an_append_waits_for_room_and_is_written_once(tiny_fs: Path) -> None:
    async def go() -> None:
        health = LogHealth(Notifier({}))
        async with SqliteEventStore(tiny_fs / "state" / "davit.db", outage=health) as store:
            await store.append("s", 0, [thing(n=1)])
            filler = fill(tiny_fs)
            landed: list[int] = []

            async def append() -> None:
                landed.extend(await store.append("s", 1, [thing(n=2, pad="x" * 3000)]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(append)
                with anyio.fail_after(10):
                    while not health.failing:
                        await anyio.sleep(0.01)
                assert health.problem is not None and "no space left for the event log" in health.problem
                await anyio.sleep(1.5)  # several tries against the full disk
                assert not landed and store.writes_failing
                filler.unlink()
            assert landed == [2] and not health.failing
            assert [e.data.get("n") for e in await store.read_stream("s")] == [1, 2]
            assert (await store.verify_chain()).ok

    anyio.run(go)


def test_sealing_a_log_on_a_full_disk_is_storage_full_and_davitd_waits_for_room_to_seal_it(tiny_fs: Path, tmp_path: Path) -> None:
    """The first start with a key writes (the marker, the head's seal): on a full disk that is
    `EventLogFull`, not "damaged", and davitd's store waits for room as for any append."""
    db = tiny_fs / "state" / "davit.db"

    async def go() -> None:
        async with SqliteEventStore(db) as store:  # a log from before keys
            await store.append("s", 0, [thing(n=1, pad="x" * 3000)])
        position, head, _ = log_head(db)
        key = create_log_key(tmp_path / "etc" / "log.key", (position, head))
        filler = fill(tiny_fs)
        with pytest.raises(EventLogFull, match="no space left for the event log"):
            await SqliteEventStore(db, key=key).open()
        health = LogHealth(Notifier({}))
        opened: list[SqliteEventStore] = []

        async def open_as_davitd() -> None:
            opened.append(await SqliteEventStore(db, key=key, outage=health).open())

        async with anyio.create_task_group() as tg:
            tg.start_soon(open_as_davitd)
            with anyio.fail_after(10):
                while not health.failing:
                    await anyio.sleep(0.01)
            await anyio.sleep(1.0)
            assert not opened
            filler.unlink()
        assert not health.failing
        try:
            report = await opened[0].verify_chain(key)
            assert report.ok and report.keyed_from == 2, report
        finally:
            await opened[0].close()

    anyio.run(go)


class Chunks:
    """A job's work that records a checkpoint per chunk; fills the disk before chunk `fill_at`."""

    def __init__(self, disk: Path, fill_at: int, chunks: int = 6) -> None:
        self.disk = disk
        self.fill_at = fill_at
        self.chunks = chunks
        self.started_from: list[int] = []
        self.saw: list[str] = []

    def plan(self) -> list[str]:
        return ["copy"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        cursor = ctx.cursor("copy") or {"next": 0}
        self.started_from.append(int(cursor["next"]))
        if not self.started_from[:-1]:
            ctx.step_started("copy")
        for i in range(int(cursor["next"]), self.chunks):
            if i == self.fill_at and len(self.started_from) == 1:
                fill(self.disk)
            try:
                ctx.checkpoint("copy", {"next": i + 1}, items_done=i + 1)
            except EventLogStop as stop:
                self.saw.append(type(stop).__name__)
                raise
        ctx.step_completed("copy", {})

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {}


def test_a_run_whose_checkpoint_cannot_be_recorded_stops_there_and_resumes_from_it(tiny_fs: Path) -> None:
    async def go() -> None:
        health = LogHealth(Notifier({}))
        async with SqliteEventStore(tiny_fs / "state" / "davit.db", outage=health) as store:
            queued = ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="x", spec={}, reason="manual")
            await store.append("run-r1", 0, [ev.NewEvent.of(new_event_id(), queued)])
            rec = RunRecorder(store, fold("r1", await store.read_stream("run-r1")))
            work = Chunks(tiny_fs, fill_at=3)
            limiter = anyio.CapacityLimiter(2)

            async def operator() -> None:  # makes room a while after the log started failing
                while not health.failing:
                    await anyio.sleep(0.01)
                await anyio.sleep(1.0)
                (tiny_fs / "filler").unlink()

            async with anyio.create_task_group() as tg:
                tg.start_soon(operator)
                await ex.execute(ex.RunHandle(rec), lambda _view: work, RetrySection(), limiter)
            assert work.saw == ["EventLogStop"], "the worker was not stopped at its checkpoint"
            assert rec.view.state is RunState.QUEUED  # interrupted, then requeued once the log took writes
            # what the dispatcher does with a queued run: execute it again
            await ex.execute(ex.RunHandle(rec), lambda _view: work, RetrySection(), limiter)
            assert rec.view.state is RunState.SUCCEEDED
            # the checkpoint that could not be recorded at first was recorded (once), and the
            # work went on from it instead of redoing its chunk
            assert work.started_from == [0, 4]
            stored = await store.read_stream("run-r1")
            cursors = [e.data["cursor"]["next"] for e in stored if e.type == "CheckpointRecorded"]
            assert cursors == [1, 2, 3, 4, 5, 6]
            types = [e.type for e in stored]
            interrupted = next(e for e in stored if e.type == "RunInterrupted")
            assert "no space left for the event log" in interrupted.data["reason"]
            assert types.count("RunInterrupted") == 1 and types.count("RunSucceeded") == 1
            assert (await store.verify_chain()).ok

    anyio.run(go)

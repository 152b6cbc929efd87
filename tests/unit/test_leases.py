"""Several daemons on one log (`davit/daemon/leases.py`), on the in-memory store with an
injected clock: two supervisors, `a` and `b`, share the log as two davitd on one PostgreSQL
would. Claims race at one stream version, renewals move the lease, a lapsed lease is taken
over, and the old owner's next append is refused (the fence), after which its work stops.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from davit.daemon import executor as ex
from davit.daemon.bootstrap import Parts
from davit.daemon.config import RetrySection, load_settings
from davit.daemon.leases import LEASE_LOST, LeasePolicy
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.domain import events as ev
from davit.domain.errors import InvalidConfig, RunStopped
from davit.domain.machine import RunState
from davit.domain.ports import RunContext
from davit.domain.runs import RunView, fold
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_schedule import FakeClock
from tests.unit.test_supervisor_memory import NOW, RUNNING, seed_run, types

LEASE, RENEW = 60.0, 20.0


@asynccontextmanager
async def daemon(tmp_path: Path, name: str, store: MemoryEventStore, clock: FakeClock) -> AsyncIterator[Supervisor]:
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    settings = load_settings(home)
    sup = Supervisor(Parts(settings), store, Notifier(), "test", clock=clock, leases=LeasePolicy(name, LEASE, RENEW))
    try:
        await sup._load()
        yield sup
    finally:
        sup.parts.close()


async def follow(sup: Supervisor) -> None:
    """What `_follow_log` does as the log grows: apply every event after the last one seen."""
    for stored in await sup.store.read_all(sup.followed_after, 10_000):
        await sup._followed(stored)
        sup.followed_after = stored.position


def handle_of(sup: Supervisor, run_id: str) -> ex.RunHandle:
    handle = ex.RunHandle(sup.recorder(run_id))
    sup.handles[run_id] = handle
    return handle


async def stream(store: MemoryEventStore, run_id: str) -> list[ev.StoredEvent]:
    return await store.read_stream(ev.run_stream(run_id))


def test_of_two_daemons_claiming_one_queued_run_at_once_exactly_one_holds_it(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            won = await a._claim(handle_of(a, "r1"))
            lost = await b._claim(handle_of(b, "r1"))  # b's view is at the version a claimed at
            assert (won, lost) == (True, False)
            claims = [e for e in await stream(store, "r1") if e.type == "RunClaimed"]
            assert [c.data["owner"] for c in claims] == ["a"]
            assert b.runs["r1"].owner == "a"  # b read the run again after its refused claim
            b.handles.pop("r1")
            assert b.book is not None and b.book.held_elsewhere(b.runs["r1"])

    anyio.run(main)


def test_a_renewal_moves_the_lease_and_a_lease_renewed_in_time_is_never_taken_over(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            handle = handle_of(a, "r1")
            assert await a._claim(handle)
            await a.recorder("r1").record(*RUNNING)
            for _ in range(6):  # two minutes, a renewal every 20 s: the lease never lapses
                clock.advance(RENEW)
                assert await a.renew(handle)
                await follow(b)
                assert await b.take_over_lapsed() == []
            renewals = [e for e in await stream(store, "r1") if e.type == "LeaseRenewed"]
            assert len(renewals) == 6
            assert b.runs["r1"].lease_expires_at == renewals[-1].data["expires_at"]
            assert not handle.stop.is_set()

    anyio.run(main)


def test_a_lapsed_lease_is_taken_over_once_and_the_old_owners_appends_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            handle = handle_of(a, "r1")
            assert await a._claim(handle)
            await a.recorder("r1").record(*RUNNING, ev.CheckpointRecorded(step="store", cursor={"at": 1}))
            await follow(b)
            clock.advance(LEASE - 1)  # a stops renewing (paused, or dead)
            assert await b.take_over_lapsed() == []  # not yet
            clock.advance(2)
            assert await b.take_over_lapsed() == ["r1"]
            assert await b.take_over_lapsed() == []  # once
            assert (await types(store, "r1"))[-2:] == ["RunInterrupted", "RunRequeued"]
            assert "lease of daemon a lapsed" in b.runs["r1"].error  # type: ignore[operator]
            assert b.runs["r1"].state is RunState.QUEUED and b.runs["r1"].owner is None
            # b dispatches it: claimed from its queued state
            assert await b._claim(handle_of(b, "r1"))
            before = await types(store, "r1")
            # a, continued, tries its next checkpoint: refused by its own deadline, not even sent
            with pytest.raises(RunStopped, match=LEASE_LOST):
                ctx = ex.WorkerContext(a.recorder("r1"), handle.stop, lambda: handle.stop_reason)
                await anyio.to_thread.run_sync(lambda: ctx.checkpoint("store", {"at": 2}))
            # and its renewal finds the lease gone: its work is asked to stop
            assert not await a.renew(handle)
            assert handle.stop.is_set() and handle.stop_reason.startswith(LEASE_LOST)
            assert await types(store, "r1") == before
            assert fold("r1", await stream(store, "r1")).owner == "b"

    anyio.run(main)


def test_an_owner_whose_deadline_has_not_passed_is_fenced_by_the_stream_version(tmp_path: Path) -> None:
    """Clocks running at different rates: b took the run over while a still believed in its
    lease. a's append at the version it knew is refused, and its renewal says it lost the run."""

    async def main() -> None:
        store, clock_a, clock_b = MemoryEventStore(), FakeClock(NOW), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock_a) as a, daemon(tmp_path, "b", store, clock_b) as b:
            handle = handle_of(a, "r1")
            assert await a._claim(handle)
            await a.recorder("r1").record(*RUNNING)
            await follow(b)
            clock_b.advance(LEASE + 1)
            assert await b.take_over_lapsed() == ["r1"]
            before = await types(store, "r1")
            assert not await a.renew(handle)  # refused: the stream moved on
            assert "taken over" in handle.stop_reason
            assert await types(store, "r1") == before

    anyio.run(main)


class SteppedWork:
    """A job's work of three checkpointed chunks; after the first it waits until `go` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.chunks: list[int] = []

    def plan(self) -> list[str]:
        return ["store"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        for chunk in (1, 2, 3):
            if chunk == 2:
                assert self.go.wait(10)
            ctx.check_stop()
            self.chunks.append(chunk)  # the data step
            ctx.checkpoint("store", {"chunk": chunk})
        ctx.step_completed("store", {})

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {}


def test_a_daemon_whose_append_is_refused_stops_the_run_and_records_nothing_more(tmp_path: Path) -> None:
    """The executor of the old owner: its checkpoint after the takeover is refused, so it does
    no further data step and appends nothing (no failure, no interruption) to the run."""

    async def main() -> None:
        store, clock_a, clock_b = MemoryEventStore(), FakeClock(NOW), FakeClock(NOW)
        await seed_run(store, "r1")
        work = SteppedWork()
        async with daemon(tmp_path, "a", store, clock_a) as a, daemon(tmp_path, "b", store, clock_b) as b:
            handle = handle_of(a, "r1")
            assert await a._claim(handle)

            async def take_over() -> None:
                while "CheckpointRecorded" not in await types(store, "r1"):
                    await anyio.sleep(0.01)
                await follow(b)
                clock_b.advance(LEASE + 1)
                assert await b.take_over_lapsed() == ["r1"]
                work.go.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(take_over)
                await ex.execute(handle, lambda _view: work, RetrySection(), anyio.CapacityLimiter(4))
            assert work.chunks == [1, 2]  # chunk 2's data was written, its checkpoint refused; no chunk 3
            assert (await types(store, "r1"))[-2:] == ["RunInterrupted", "RunRequeued"]  # b's, nothing after
            assert a.recorder("r1").lease is not None and a.recorder("r1").lease.lost

    anyio.run(main)


def test_start_up_recovery_leaves_another_live_daemons_run_and_recovers_its_own_previous_lifes(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        for run_id, owner in (("held-by-a", "a"), ("held-by-b-before", "b"), ("never-leased", None)):
            await seed_run(store, run_id)
            if owner is not None:
                claim = ev.RunClaimed(owner=owner, token="t", lease_seconds=LEASE, expires_at=NOW.isoformat())
                await seed_more(store, run_id, claim)
            await seed_more(store, run_id, *RUNNING)
        async with daemon(tmp_path, "b", store, clock) as b:
            await b._recover()
            assert b.runs["held-by-a"].state is RunState.RUNNING  # a may be alive: its lease decides
            assert b.runs["held-by-b-before"].state is RunState.QUEUED  # b's own, from before it restarted
            assert b.runs["never-leased"].state is RunState.QUEUED
            clock.advance(LEASE + 1)  # a's lease seen to lapse since b started
            assert await b.take_over_lapsed() == ["held-by-a"]

    anyio.run(main)


async def seed_more(store: MemoryEventStore, run_id: str, *events: ev.Event) -> None:
    from davit.daemon.recorder import RunRecorder

    recorder = await RunRecorder.load(store, run_id)
    await recorder.record(*events)


def test_a_run_is_placed_by_runs_on_else_a_local_kind_on_the_daemon_that_defined_its_job(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        async with daemon(tmp_path, "a", store, clock) as a:
            a.registry.jobs["nightly"] = _job("nightly", daemon="b")
            files = RunView("r1", job="nightly", kind="files.backup", spec={})
            assert not a._placed_here(files)
            a.registry.jobs["nightly"] = _job("nightly", daemon="a")
            assert a._placed_here(files)
            network = RunView("r2", job="db", kind="postgres.backup", spec={})
            assert a._placed_here(network)
            assert not a._placed_here(RunView("r3", job="db", kind="postgres.backup", spec={"runs_on": "b"}))
            assert a._placed_here(RunView("r4", job="db", kind="postgres.backup", spec={"runs_on": "a"}))

    anyio.run(main)


def _job(name: str, daemon: str | None = None) -> Any:
    from davit.daemon.jobs import JobState

    return JobState(name, kind="files.backup", retired=False, daemon=daemon)


def test_the_fold_ends_a_lease_when_the_run_leaves_the_states_a_daemon_works_in() -> None:
    async def main() -> None:
        store = MemoryEventStore()
        await seed_run(store, "r1")
        claim = ev.RunClaimed(owner="a", token="t", lease_seconds=LEASE, expires_at=NOW.isoformat())
        await seed_more(store, "r1", claim, *RUNNING)
        assert fold("r1", await stream(store, "r1")).owner == "a"
        await seed_more(store, "r1", ev.RunInterrupted(reason="x"))
        assert fold("r1", await stream(store, "r1")).owner is None
        await seed_more(store, "r1", ev.RunRequeued(reason="y"), ev.RunPreparing())
        assert fold("r1", await stream(store, "r1")).owner is None  # unclaimed until claimed again

    anyio.run(main)


@pytest.mark.parametrize("name", ["-x", "a b", "x" * 64, "é"])
def test_a_daemon_name_that_is_not_one_is_refused_naming_the_field(tmp_path: Path, name: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "davit.toml").write_text(f'[daemon]\nname = "{name}"\n')
    with pytest.raises(InvalidConfig) as err:
        load_settings(home)
    assert "daemon.name" in str(err.value)


def test_a_renewal_interval_above_half_the_lease_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "davit.toml").write_text("[daemon]\nlease_seconds = 30\nlease_renew_seconds = 20\n")
    with pytest.raises(InvalidConfig, match="lease_renew_seconds"):
        load_settings(home)


def test_a_daemons_jobs_directory_retires_only_its_own_jobs_and_it_learns_the_others_from_the_log(tmp_path: Path) -> None:
    """Per-host jobs directories on one log: `b`'s sync of its directory, which lacks `a`'s
    file, must not retire `a`'s job (it did, as the one daemon's registry retires every job
    whose file is gone); `b` knows `a`'s job from the `JobDefined` event it followed."""
    from davit.daemon.jobs import JobRegistry

    async def main() -> None:
        store = MemoryEventStore()
        registries = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            registry = JobRegistry(store)
            registry.daemon_name = name
            await registry.load()
            registries[name] = registry
        (tmp_path / "a" / "docs.toml").write_text('name = "docs"\nkind = "files.backup"\n[source]\npath = "/srv"\n')
        assert await registries["a"].sync_directory(tmp_path / "a") == ["docs"]
        for stored in await store.read_all(0, 100, "job-"):
            await registries["b"].follow(stored)
            await registries["b"].follow(stored)  # (twice: applied once)
        docs = registries["b"].by_name("docs")
        assert docs is not None and docs.daemon == "a" and docs.version == 1
        await registries["b"].sync_directory(tmp_path / "b")
        assert [e.type for e in await store.read_stream(ev.job_stream("docs"))] == ["JobDefined"]
        (tmp_path / "a" / "docs.toml").unlink()
        await registries["a"].sync_directory(tmp_path / "a")  # its owner's directory still retires it
        assert [e.type for e in await store.read_stream(ev.job_stream("docs"))] == ["JobDefined", "JobRetired"]

    anyio.run(main)


def test_two_daemons_sharing_a_name_do_not_take_each_others_live_runs_over_again_and_again(tmp_path: Path) -> None:
    """Two davitd given one name (the host name of two clones, a copied config): a lease of this
    daemon's name that it does not hold is a previous life's only at start-up; later it is a
    twin's, and it is taken over only once it lapses, not at every pass (the two fencing each
    other's run every two seconds, forever)."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        await seed_run(store, "r2")
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        async with daemon(tmp_path / "one", "a", store, clock) as a1, daemon(tmp_path / "two", "a", store, clock) as a2:
            handle = handle_of(a1, "r1")
            assert await a1._claim(handle)
            await a1.recorder("r1").record(*RUNNING)
            await follow(a2)
            for _ in range(3):
                clock.advance(RENEW)
                assert await a1.renew(handle)
                await follow(a2)
                assert await a2.take_over_lapsed() == []
            assert a2.book is not None and a2.book.held_elsewhere(a2.runs["r1"])
            assert not handle.stop.is_set()
            # nor is a run the twin holds dispatched here
            rb = handle_of(a1, "r2")
            assert await a1._claim(rb)
            await a1.recorder("r2").record(*RUNNING)
            await follow(a2)
            assert a2.book.held_elsewhere(a2.runs["r2"])
            # a start of the twin took its leases as a previous life's (davit cannot tell them apart)
            (tmp_path / "three").mkdir()
            async with daemon(tmp_path / "three", "a", store, clock) as restarted:
                for run_id in ("r1", "r2"):
                    assert restarted.book is not None
                    assert not restarted.book.held_elsewhere(restarted.runs[run_id], at_start=True)
                    assert not restarted.book.held_elsewhere(restarted.runs[run_id])  # (still, after start-up)
            # once the twin stops renewing, its run is taken over as any lapsed lease is
            clock.advance(LEASE + 1)
            await follow(a2)
            assert sorted(await a2.take_over_lapsed()) == ["r1", "r2"]

    anyio.run(main)


def test_a_job_file_at_the_same_path_on_another_daemons_host_does_not_take_the_job_over(tmp_path: Path) -> None:
    """Two hosts with jobs directories at one path (`/etc/davit/jobs` on both): `a` defined
    `docs` from `jobs/docs.toml`; `b`'s own `jobs/docs.toml`, of other content, used to define
    it anew in `b`'s name (same file path, so not "defined by another file"), and `a`'s files
    job then ran on `b`'s host. It is refused, naming the daemon that defined the job."""
    from davit.daemon.jobs import JobRegistry

    async def main() -> None:
        store = MemoryEventStore()
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        registries = {}
        for name in ("a", "b"):
            registry = JobRegistry(store)
            registry.daemon_name = name
            await registry.load()
            registries[name] = registry
        (jobs / "docs.toml").write_text('name = "docs"\nkind = "files.backup"\n[source]\npath = "/srv/a"\n')
        assert await registries["a"].sync_directory(jobs) == ["docs"]
        for stored in await store.read_all(0, 100, "job-"):
            await registries["b"].follow(stored)
        (jobs / "docs.toml").write_text('name = "docs"\nkind = "files.backup"\n[source]\npath = "/srv/b-host"\n')
        assert await registries["b"].sync_directory(jobs) == []
        docs = registries["b"].by_name("docs")
        assert docs is not None and docs.daemon == "a" and docs.spec["source"]["path"] == "/srv/a"
        assert [e.type for e in await store.read_stream(ev.job_stream("docs"))] == ["JobDefined"]
        rejected = [e for e in await store.read_stream(ev.DAEMON_STREAM) if e.type == "JobFileRejected"]
        assert len(rejected) == 1 and "daemon 'a'" in rejected[0].data["problems"][0]["reason"]
        # nor does `b`'s file, renamed to another job, retire `a`'s as the job it renamed
        (jobs / "docs.toml").write_text('name = "docs2"\nkind = "files.backup"\n[source]\npath = "/srv/b-host"\n')
        assert await registries["b"].sync_directory(jobs) == ["docs2"]
        assert [e.type for e in await store.read_stream(ev.job_stream("docs"))] == ["JobDefined"]

    anyio.run(main)


def test_a_run_whose_daemon_died_while_it_was_cancelling_is_settled_once_its_lease_lapses(tmp_path: Path) -> None:
    """`a` recorded an operator's cancel of its run and died before settling it: the run was
    left `cancelling` until some daemon restarted, as the takeover passed
    over every state but the working ones and `interrupted`."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            assert await a._claim(handle_of(a, "r1"))
            await a.recorder("r1").record(*RUNNING, ev.RunCancelling(reason="cancelled by operator"))
            await follow(b)
            assert await b.take_over_lapsed() == []  # a's lease is still live
            assert b.runs["r1"].state is RunState.CANCELLING
            clock.advance(LEASE + 1)  # a is gone
            assert await b.take_over_lapsed() == ["r1"]
            assert b.runs["r1"].state is RunState.CANCELLED
            assert (await types(store, "r1"))[-2:] == ["RunCancelling", "RunCancelled"]
            assert await b.take_over_lapsed() == []

    anyio.run(main)


def test_a_restarted_daemon_dispatches_its_previous_lifes_claimed_or_rolling_back_runs_at_once(tmp_path: Path) -> None:
    """Killed right after its claim (the run still `queued`) or during a rollback: start-up
    recovery leaves both states to the dispatcher, which must take them as the previous life's
    (dead) at once, not wait a lease for them to lapse."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        claim = ev.RunClaimed(owner="a", token="t-old", lease_seconds=LEASE, expires_at=NOW.isoformat())
        await seed_run(store, "claimed")
        await seed_more(store, "claimed", claim)
        await seed_run(store, "rolling")
        await seed_more(store, "rolling", claim, *RUNNING, ev.RunRollingBack(cause="failed"))
        async with daemon(tmp_path, "a", store, clock) as a:
            await a._recover()
            assert a.book is not None
            for run_id, state in (("claimed", RunState.QUEUED), ("rolling", RunState.ROLLING_BACK)):
                view = a.runs[run_id]
                assert view.state is state and view.owner == "a"
                assert not a.book.held_elsewhere(view)  # dispatched now
            assert await a._claim(handle_of(a, "rolling"))

    anyio.run(main)


def test_a_files_job_is_never_run_by_a_daemon_other_than_the_one_that_defined_it_runs_on_or_not(tmp_path: Path) -> None:
    """`runs_on` used to outrank the rule for kinds whose data is on the host: a files job in
    `a`'s directory saying `runs_on = "b"` was run by `b`, on `b`'s host's files. Its file is
    refused naming the field, and a run of it (from a log written before) is placed on `a` only."""
    from davit.daemon.jobs import JobRegistry

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        jobs = tmp_path / "jobs"
        jobs.mkdir()
        registry = JobRegistry(store)
        registry.daemon_name = "a"
        await registry.load()
        text = 'name = "docs"\nkind = "files.backup"\nruns_on = "b"\n[source]\npath = "/srv"\n'
        (jobs / "docs.toml").write_text(text)
        assert await registry.sync_directory(jobs) == []
        rejected = [e for e in await store.read_stream(ev.DAEMON_STREAM) if e.type == "JobFileRejected"]
        assert [p["field"] for p in rejected[0].data["problems"]] == ["runs_on"]
        (jobs / "db.toml").write_text('name = "db"\nkind = "files.backup"\nruns_on = "a"\n[source]\npath = "/srv"\n')
        assert await registry.sync_directory(jobs) == ["db"]  # its own name: allowed
        async with daemon(tmp_path, "b", store, clock) as b:
            b.registry.jobs["docs"] = _job("docs", daemon="a")
            assert not b._placed_here(RunView("r1", job="docs", kind="files.backup", spec={"runs_on": "b"}))

    anyio.run(main)


def test_a_run_whose_runs_on_names_a_daemon_that_never_beat_is_said_to_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the operator sees of `runs_on = "ghost"` (a typo): the run stays queued, and used
    to say nothing more; now davitd's log says which daemon it waits for."""
    from davit.daemon.jobs import JobState
    from davit.domain.daemons import DaemonBeat

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await store.beat(DaemonBeat("b", "test", 1, "h", NOW.isoformat()))
        async with daemon(tmp_path, "a", store, clock) as a:
            for runs_on in ("ghost", "b", "a"):
                spec = {"name": f"db-{runs_on}", "kind": "postgres.backup", "runs_on": runs_on}
                job = JobState(f"db-{runs_on}", kind="postgres.backup", retired=False, daemon="a", spec=spec)
                await a.trigger(job, "manual")

    with caplog.at_level("WARNING", logger="davitd"):
        anyio.run(main)
    waiting = [r.getMessage() for r in caplog.records if "never beaten" in r.getMessage()]
    assert len(waiting) == 1 and "'ghost'" in waiting[0] and "db-ghost" in waiting[0]


def test_an_owner_cut_off_from_the_log_longer_than_its_lease_stops_and_never_appends_after_the_takeover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`a`'s connection to PostgreSQL drops for longer than the lease: its renewals cannot be
    written (tried again, the deadline decides), past its deadline its work is asked to stop
    and its next checkpoint is refused unsent; `b` takes the run over, and when `a`'s
    connection is back nothing of `a` (not the renewal it kept unsent) lands after the claim."""
    from davit.domain.errors import EventLogUnavailable

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            handle = handle_of(a, "r1")
            assert await a._claim(handle)
            await a.recorder("r1").record(*RUNNING)
            await follow(b)
            real = store.append_atomic_read_back

            async def cut_off(*args: Any, **kw: Any) -> Any:
                raise EventLogUnavailable("postgresql", "connection refused")

            monkeypatch.setattr(store, "append_atomic_read_back", cut_off)
            clock.advance(RENEW)
            assert await a.renew(handle)  # not written; tried again
            clock.advance(RENEW)
            assert await a.renew(handle)
            clock.advance(RENEW + 1)  # past the deadline of the last renewal written
            assert not await a.renew(handle)
            assert handle.stop.is_set() and handle.stop_reason.startswith(LEASE_LOST)
            monkeypatch.setattr(store, "append_atomic_read_back", real)
            clock.advance(1)
            assert await b.take_over_lapsed() == ["r1"]
            assert await b._claim(handle_of(b, "r1"))
            after_claim = await types(store, "r1")
            with pytest.raises(RunStopped, match=LEASE_LOST):
                ctx = ex.WorkerContext(a.recorder("r1"), handle.stop, lambda: handle.stop_reason)
                await anyio.to_thread.run_sync(lambda: ctx.checkpoint("store", {"at": 2}))
            assert not await a.renew(handle)
            assert await types(store, "r1") == after_claim
            assert fold("r1", await stream(store, "r1")).owner == "b"

    anyio.run(main)


class StartedWork(SteppedWork):
    """`SteppedWork` that records its step's start first, as the adapters' works do."""

    def run(self, ctx: RunContext) -> None:
        ctx.step_started("store")
        super().run(ctx)


def test_every_step_event_carries_the_token_of_the_lease_its_daemon_held_and_none_without_a_lease(tmp_path: Path) -> None:
    """Who wrote a step is read from the log alone: `StepStarted`, `CheckpointRecorded` and
    `StepCompleted` name the claim (`RunClaimed.token`) under which they were appended. A daemon
    holding no lease (one daemon, SQLite) writes them exactly as before: no `lease` key."""

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        await seed_run(store, "r2")
        work = StartedWork()
        work.go.set()
        async with daemon(tmp_path, "a", store, clock) as a:
            handle = handle_of(a, "r1")
            assert await a._claim(handle)
            await ex.execute(handle, lambda _view: work, RetrySection(), anyio.CapacityLimiter(4))
            events = await stream(store, "r1")
            [token] = [e.data["token"] for e in events if e.type == "RunClaimed"]
            steps = [e for e in events if e.type in ("StepStarted", "CheckpointRecorded", "StepCompleted")]
            assert [e.type for e in steps] == ["StepStarted", *["CheckpointRecorded"] * 3, "StepCompleted"]
            assert [e.data.get("lease") for e in steps] == [token] * 5
            assert fold("r1", events).state is RunState.SUCCEEDED

            unleased = StartedWork()
            unleased.go.set()
            await ex.execute(handle_of(a, "r2"), lambda _view: unleased, RetrySection(), anyio.CapacityLimiter(4))
            plain = [e for e in await stream(store, "r2") if e.type.startswith(("Step", "Checkpoint"))]
            assert len(plain) == 5 and not any("lease" in e.data for e in plain)

    anyio.run(main)


async def handle_requests(*daemons: Supervisor, seconds: float = 0.6) -> None:
    """What each daemon's request loop does in `seconds`: they read the same requests at once."""
    async with anyio.create_task_group() as tg:
        for sup in daemons:
            tg.start_soon(sup._requests_loop)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()


def test_every_request_is_answered_by_one_daemon_and_the_others_record_no_failure(tmp_path: Path) -> None:
    """Two daemons read every CLI request: a request neither can handle (a type they do not
    know, a copy naming repositories not configured) used to be failed by each, a
    `RequestFailed` per daemon; one claims it (`RequestClaimed` at version 0 of its claim
    stream) and answers, the other leaves it. A run request is queued once."""
    from davit.daemon.cli.requests import send
    from davit.domain.commands import CopyNow, RunJobNow

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            version = await store.stream_version(ev.REQUESTS_STREAM)
            (unknown,) = await store.append(ev.REQUESTS_STREAM, version, [ev.NewEvent("req-1", "FutureRequest", {"x": 1})])
            copy = await send(store, CopyNow(run_id="c1", source_repository="nowhere", repository="neither"))
            run = await send(store, RunJobNow(job="weekly", run_id="r9"))
            await handle_requests(a, b)
            failed = [e for e in await store.read_stream(ev.DAEMON_STREAM) if e.type == "RequestFailed"]
            assert sorted(e.data["position"] for e in failed) == [unknown, copy]
            for position in (unknown, copy, run):
                claims = await store.read_stream(ev.request_claim_stream(position))
                assert [c.type for c in claims] == ["RequestClaimed"]
                assert claims[0].data["owner"] in ("a", "b")
            assert (await types(store, "r9")) == ["RunQueued", "RunFailed"]  # (no job named weekly), once
            for sup in (a, b):
                assert sup.requests_after == run  # each passed every request

    anyio.run(main)


def test_a_cancel_of_a_run_a_daemon_holds_is_answered_by_that_daemon_alone(tmp_path: Path) -> None:
    from davit.daemon.cli.requests import send
    from davit.domain.commands import CancelRun

    async def main() -> None:
        store, clock = MemoryEventStore(), FakeClock(NOW)
        await seed_run(store, "r1")
        async with daemon(tmp_path, "a", store, clock) as a, daemon(tmp_path, "b", store, clock) as b:
            assert await b._claim(handle_of(b, "r1"))
            await b.recorder("r1").record(*RUNNING)
            await follow(a)
            position = await send(store, CancelRun(run_id="r1"))
            await handle_requests(a)
            assert await store.read_stream(ev.request_claim_stream(position)) == []  # left to b, unclaimed
            assert "RunCancelling" not in await types(store, "r1")
            await handle_requests(b)
            assert "RunCancelling" in await types(store, "r1")
            assert not [e for e in await store.read_stream(ev.DAEMON_STREAM) if e.type == "RequestFailed"]

    anyio.run(main)


def test_a_job_file_at_one_path_on_two_hosts_of_different_names_keeps_each_hosts_job_its_own(tmp_path: Path) -> None:
    """`a` defines `docs` from `jobs/x.toml`, `b` defines `other` from its own `jobs/x.toml`
    (same path, another host). Each registry indexed the path under one job only, the last
    one it saw: `a`'s file removed then retired nothing (the index named `b`'s job, which `a`
    leaves alone), and `a`'s file renamed to `docs2` left `docs` active too."""
    from davit.daemon.jobs import JobRegistry

    async def main() -> None:
        store = MemoryEventStore()
        dirs = {name: tmp_path / name / "jobs" for name in ("a", "b")}
        registries = {}
        for name, jobs in dirs.items():
            jobs.mkdir(parents=True)
            registry = JobRegistry(store)
            registry.daemon_name = name
            await registry.load()
            registries[name] = registry

        async def follow_all() -> None:
            for registry in registries.values():
                for stored in await store.read_all(0, 1000, "job-"):
                    await registry.follow(stored)

        # one path on both hosts (here: a symlink, so the two directories name one path string)
        shared = tmp_path / "etc-jobs"
        (dirs["a"] / "x.toml").write_text('name = "docs"\nkind = "files.backup"\n[source]\npath = "/srv/a"\n')
        shared.symlink_to(dirs["a"])
        assert await registries["a"].sync_directory(shared) == ["docs"]
        await follow_all()
        shared.unlink()
        (dirs["b"] / "x.toml").write_text('name = "other"\nkind = "files.backup"\n[source]\npath = "/srv/b"\n')
        shared.symlink_to(dirs["b"])
        assert await registries["b"].sync_directory(shared) == ["other"]
        await follow_all()
        for registry in registries.values():
            assert registry.by_name("docs") is not None and registry.by_name("other") is not None
        # a renames its file's job: docs retires, docs2 is defined; b's `other` stays
        shared.unlink()
        shared.symlink_to(dirs["a"])
        (dirs["a"] / "x.toml").write_text('name = "docs2"\nkind = "files.backup"\n[source]\npath = "/srv/a"\n')
        assert await registries["a"].sync_directory(shared) == ["docs2"]
        await follow_all()
        assert registries["a"].by_name("docs") is None and registries["b"].by_name("docs") is None
        assert registries["a"].by_name("other") is not None
        # a's file removed: docs2 retires, b's `other` stays
        (dirs["a"] / "x.toml").unlink()
        await registries["a"].sync_directory(shared)
        await follow_all()
        assert registries["a"].by_name("docs2") is None and registries["b"].by_name("docs2") is None
        other = registries["a"].by_name("other")
        assert other is not None and other.daemon == "b"
        assert [e.type for e in await store.read_stream(ev.job_stream("other"))] == ["JobDefined"]

    anyio.run(main)


def test_a_request_whose_claim_cannot_be_written_is_read_again_not_passed_over(tmp_path: Path) -> None:
    """The log failing at the claim (a PostgreSQL outage): the request is neither answered nor
    marked handled, and the daemon's request loop goes on; at the next poll it is answered."""
    from davit.daemon.cli.requests import send
    from davit.domain.commands import RunJobNow
    from davit.domain.errors import EventLogUnavailable

    class ClaimsFailOnce(MemoryEventStore):
        failures = 1

        async def append(self, stream: str, expected_version: int, events: Any, *, patient: bool = True) -> list[int]:
            if stream.startswith("request-") and self.failures:
                self.failures -= 1
                raise EventLogUnavailable("the test's log", "the server is down")
            return await super().append(stream, expected_version, events, patient=patient)

    async def main() -> None:
        store, clock = ClaimsFailOnce(), FakeClock(NOW)
        async with daemon(tmp_path, "a", store, clock) as a:
            position = await send(store, RunJobNow(job="weekly", run_id="r9"))
            await handle_requests(a, seconds=1.0)
            assert store.failures == 0
            assert (await types(store, "r9")) == ["RunQueued", "RunFailed"]
            assert a.requests_after == position

    anyio.run(main)

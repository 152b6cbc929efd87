"""Two compose.migrate runs to one target project at once (issue 21), against the real peers:
the second is refused at pre-flight by the first's claim on the target (`claim.py`), before it
stops anything, and so can never unpack into or roll back the first's project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.compose.migrate import PREFLIGHT, ROLLBACK_TARGET, STOP, ComposeMigrateWork
from davit.adapters.compose.target import PreflightFailed
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.compose.stack import Stack
from tests.integration.compose.test_migrate_adapter import job, work_for
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


class StopAfter(MemoryRunContext):
    """Stops the run once `step` is done (as a stop request between steps does)."""

    def __init__(self, run_id: str, step: str | None = None) -> None:
        super().__init__(run_id=run_id)
        self.stop_after = step

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        super().step_completed(step, summary)
        if step == self.stop_after:
            self.stop.set()


def prepared(work: ComposeMigrateWork, ctx: MemoryRunContext) -> ComposeMigrateWork:
    work.details = work.prepare(ctx)
    return work


def test_two_migrations_to_one_target_project_the_second_is_refused_before_it_stops_anything(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    """Both past inspect while the project is free on the target; the first passes pre-flight
    and is stopped there. Before the claim the second passed pre-flight too, stopped the source
    and unpacked into the first's store and volumes, and the rollback of either removed the
    other's project."""
    source, target = engines
    spec = job(stack, ssh_peer, tmp_path / "target")
    claim = tmp_path / "target" / ".davit" / f"{stack.name}.run"
    first_ctx, second_ctx = StopAfter("mig-first", PREFLIGHT), StopAfter("mig-second")
    first = prepared(work_for(spec, tmp_path, "mig-first"), first_ctx)
    second = prepared(work_for(spec, tmp_path, "mig-second"), second_ctx)
    with pytest.raises(RunStopped):
        first.run(first_ctx)
    assert PREFLIGHT in first_ctx.done

    with pytest.raises(PreflightFailed, match="another run \\(mig-first\\) is migrating project"):
        second.run(second_ctx)
    assert PREFLIGHT not in second_ctx.done and STOP not in second_ctx.cursors
    assert not second.needs_rollback(second_ctx), "the refused run has nothing to undo"
    assert stack.states(source) == {"web": "running", "worker": "running"}, "the refused run stopped nothing"
    assert claim.is_symlink(), "the refused run left the first's claim alone"

    first_ctx.stop.clear()
    first_ctx.stop_after = None
    resumed = work_for(spec, tmp_path, "mig-first")  # its own claim: resumed
    resumed.details = first.details
    resumed.run(first_ctx)
    resumed.finish(first_ctx)
    assert stack.states(target) == {"web": "running", "worker": "running"}
    assert not claim.is_symlink(), "the claim is released at finalize"


def test_a_migration_stopped_after_preflight_rolls_back_its_claim_and_a_dry_run_keeps_none(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, _ = engines
    claim = tmp_path / "target" / ".davit" / f"{stack.name}.run"
    dry = StopAfter("mig-dry")
    prepared(work_for(job(stack, ssh_peer, tmp_path / "target", dry_run=True), tmp_path, "mig-dry"), dry).run(dry)
    assert PREFLIGHT in dry.done and not claim.is_symlink(), "a dry run checks the claim and keeps none"

    ctx = StopAfter("mig-cut", PREFLIGHT)
    work = prepared(work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path, "mig-cut"), ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert claim.is_symlink() and work.needs_rollback(ctx), "past pre-flight the claim is held: a rollback frees it"
    work.rollback(ctx)
    assert ROLLBACK_TARGET in ctx.done and not claim.is_symlink()
    assert stack.states(source) == {"web": "running", "worker": "running"}


def test_a_claim_left_by_a_run_the_log_shows_ended_is_taken_over_and_one_it_does_not_is_refused_naming_the_fix(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    """The first run dies past pre-flight and never resumes (its job removed): before, its claim
    stayed until removed by hand; now a run takes it over once the log shows that run ended."""
    _, target = engines
    spec = job(stack, ssh_peer, tmp_path / "target")
    claim = tmp_path / "target" / ".davit" / f"{stack.name}.run"
    dead_ctx = StopAfter("mig-dead", PREFLIGHT)
    with pytest.raises(RunStopped):
        prepared(work_for(spec, tmp_path, "mig-dead"), dead_ctx).run(dead_ctx)
    assert claim.is_symlink()

    running_ctx = StopAfter("mig-blocked")
    with pytest.raises(PreflightFailed, match=r"another run \(mig-dead\).*`davit cancel mig-dead` ends it"):
        prepared(work_for(spec, tmp_path, "mig-blocked"), running_ctx).run(running_ctx)  # the log: not ended
    assert os.readlink(claim) == "mig-dead"

    ctx = StopAfter("mig-next")
    inputs = RunInputs(spec, "mig-next", Tuning(), repo=Repository.open(tmp_path / "repo"), run_ended={"mig-dead"}.__contains__)
    work = prepared(ComposeMigrateWork(inputs), ctx)
    work.run(ctx)
    work.finish(ctx)
    assert any("left by run mig-dead" in w for w in ctx.warnings)
    assert stack.states(target) == {"web": "running", "worker": "running"}
    assert not claim.is_symlink() and not list(claim.parent.glob("*.takeover-*")), "released at finalize, no marker left"

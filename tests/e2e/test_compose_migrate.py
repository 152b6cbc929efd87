"""compose.migrate through davitd, as an operator runs it: success, rollback on a failure at
"start target", `kill -9` of davitd during the transfer, and a cancel after the source was
stopped (rolled back, also across a `kill -9` in the middle of that rollback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.compose_job import migrate_job_text
from tests.e2e.conftest import Davit, write_job
from tests.integration.compose.stack import Stack, cleanup, digest, make_stack
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]


def job_text(stack: Stack, ssh_peer: SshPeer, base: Path) -> str:
    return migrate_job_text(stack, ssh_peer, base, verify_timeout=120)


@contextmanager
def migrating_a_big_stack(
    davit: Davit, source: docker.DockerClient, docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path
) -> Iterator[tuple[Stack, dict[str, tuple[Any, ...]]]]:
    """Starts davitd moving a new stack with 80 MiB more in its volume; yields it and its volume's digest, then cleans up."""
    stack = make_stack(tmp_path, docker_peer, ssh_peer)
    try:
        stack.compose("exec", "-T", "web", "sh", "-c", "dd if=/dev/urandom of=/data/db/big bs=1048576 count=80 2>/dev/null")
        before = digest(stack.volume_dir(source))
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target"))
        yield stack, before
    finally:
        cleanup(stack, tmp_path / "target")


def steps(davit: Davit, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = '{kind}'")]


def test_migration_through_davitd_moves_the_stack_and_records_the_model(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    stack = make_stack(tmp_path, docker_peer, ssh_peer)
    try:
        before = digest(stack.volume_dir(source))
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target"))
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run
        inspect = [s for s in steps(davit, run["run_id"], "StepCompleted") if s["step"] == "inspect"]
        assert set(inspect[0]["summary"]["model"]["services"]) == {"web", "worker"}
        assert "hunter2-secret" not in repr(davit.events()), "the .env's secret reached the log"
        assert stack.states(target) == {"web": "running", "worker": "running"}
        assert stack.states(source) == {"web": "exited", "worker": "exited"}
        assert digest(stack.volume_dir(target)) == before
        assert digest(tmp_path / "target" / stack.name / "site") == digest(stack.dir / "site")
    finally:
        cleanup(stack, tmp_path / "target")


def test_failure_at_start_target_ends_rolled_back_with_the_source_running(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    only_here = "davit-test/only-on-source:1"
    source.images.get(docker_peer.image).tag(only_here)
    stack = make_stack(tmp_path, docker_peer, ssh_peer, web_image=only_here)
    try:
        before = digest(stack.volume_dir(source))
        davit.start()
        # images = "none": the image stays behind (with the default it would travel), so start fails
        text = job_text(stack, ssh_peer, tmp_path / "target").replace("[source]", 'images = "none"\n[source]')
        write_job(davit, "move.toml", text)
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "rolled_back", run
        assert "only-on-source" in run["error"]
        history = [e["type"] for e in davit.history(run["run_id"])]
        assert history[-2:] == ["StepCompleted", "RunRolledBack"] and "RunRollingBack" in history
        assert stack.states(source) == {"web": "running", "worker": "running"}
        assert digest(stack.volume_dir(source)) == before
        assert stack.states(target) == {} and not target.volumes.list(filters={"name": stack.name})
    finally:
        cleanup(stack, tmp_path / "target")


@pytest.mark.slow
def test_migration_killed_during_transfer_resumes_and_sends_only_what_is_missing(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with migrating_a_big_stack(davit, source, docker_peer, ssh_peer, tmp_path) as (stack, before):

        def transfer_checkpoints() -> list[dict[str, Any]]:
            return [e[3] for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "transfer"]

        davit.wait_for(lambda: bool(transfer_checkpoints()), 300, "a transfer checkpoint", poll=0.005)
        davit.kill9()
        confirmed = max(int(c["cursor"]["bytes_sent"]) for c in transfer_checkpoints())
        run_at_kill = davit.runs("move")[-1]
        assert run_at_kill["state"] == "running" and run_at_kill["steps"]["transfer"]["status"] != "done"

        davit.start()
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run
        assert run["interruptions"] == 1
        transfer = run["steps"]["transfer"]["summary"]
        export = run["steps"]["export"]["summary"]
        assert transfer["already_on_target"] >= 1
        # after the restart only what the target's store lacked was sent: never what the
        # batches confirmed before the kill carried (at most a batch in flight is sent again)
        assert transfer["bytes_sent"] == transfer["bytes_missing"]
        assert transfer["bytes_missing"] <= transfer["bytes_needed"] - confirmed
        assert transfer["chunks_sent"] + transfer["already_on_target"] == export["chunks"]
        assert digest(stack.volume_dir(target)) == before
        assert stack.states(target) == {"web": "running", "worker": "running"}


@pytest.mark.slow
def test_cancel_after_the_source_stopped_rolls_back_and_a_crash_in_that_rollback_resumes_it(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with migrating_a_big_stack(davit, source, docker_peer, ssh_peer, tmp_path) as (stack, before):

        def started(step: str) -> bool:
            return any(s["step"] == step for s in [e[3] for e in davit.events("type = 'StepStarted'")])

        davit.wait_for(lambda: started("export"), 300, "the source to be stopped", poll=0.005)
        assert stack.states(source) == {"web": "exited", "worker": "exited"}
        run_id = davit.runs("move")[-1]["run_id"]
        davit.cli("cancel", run_id)
        davit.wait_for(lambda: started("rollback_target"), 120, "the rollback to start", poll=0.005)
        davit.kill9()
        at_kill = davit.runs("move")[-1]
        assert at_kill["state"] == "rolling_back" and at_kill["error"] == "cancelled by operator", at_kill
        assert at_kill["steps"].get("restart_source", {}).get("status") != "done"

        davit.start()
        waited = davit.cli("cancel", run_id, "--wait", "--timeout", "180", check=False)
        assert waited.returncode == 0, waited.stderr  # a cancel that rolled back is a cancel that worked
        run = davit.runs("move")[-1]
        assert run["state"] == "rolled_back" and run["error"] == "cancelled by operator", run
        types = [e["type"] for e in davit.history(run_id)]
        assert types.count("RunCancelling") == 1 and types.count("RunRollingBack") == 1 and types[-1] == "RunRolledBack"
        assert "RunCancelled" not in types and "RunVerifying" not in types
        assert run["steps"]["restart_source"]["status"] == "done"
        assert stack.states(source) == {"web": "running", "worker": "running"}
        assert digest(stack.volume_dir(source)) == before
        assert stack.states(target) == {} and not target.volumes.list(filters={"name": stack.name})
        assert not (tmp_path / "target" / stack.name).exists()

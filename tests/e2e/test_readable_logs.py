"""davitd's log during a compose migration over SSH, at the default level: a line per state
change of the run, and no remote command's text (asyncssh logs each one at INFO; davitd keeps
the libraries' chatter at DEBUG). The migration's export and import know their totals."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_compose_migrate import job_text
from tests.integration.compose.stack import cleanup, make_stack
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]

# Commands davit runs on the target host (davit/adapters/compose/target.py): none may be logged.
REMOTE_COMMANDS = ("docker version --format", "docker compose version --short", "docker ps -aq --filter", "Command:")


def test_a_migration_over_ssh_logs_its_states_and_no_remote_command_at_info(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    stack = make_stack(tmp_path, docker_peer, ssh_peer)
    try:
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target"))
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run
    finally:
        cleanup(stack, tmp_path / "target")
    davit.stop()
    log = davit.logs[-1].read_text()
    leaked = [line for line in log.splitlines() if any(c in line for c in REMOTE_COMMANDS)]
    assert not leaked, leaked
    assert "asyncssh" not in log
    run_id = run["run_id"]
    for state in ("preparing", "running", "verifying", "succeeded"):
        assert sum(f"run {run_id} (move" in line and f" {state}" in line for line in log.splitlines()) == 1, state
    checkpoints = [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")]
    for step in ("export", "import"):
        last = [c for c in checkpoints if c["step"] == step][-1]
        assert last["items_total"] == last["items_done"] > 0, last

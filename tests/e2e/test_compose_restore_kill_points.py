"""compose.restore through davitd, killed with `kill -9` at the points the transfer test does
not reach (issue 21's attack): with pre-flight done and the target claimed, and with the stack
started but not yet verified. Resumed, the run succeeds, no step done before the kill is done
again, and the claim on the project's name (`base_path/.davit/NAME.run`) is held while the run
is dead and released when it ends."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_compose_restore import backup, built, image_id, restore_text, states  # noqa: F401
from tests.integration.compose.restore_stack import BuiltStack
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["export", "verify"])
def test_a_restore_killed_after_preflight_or_after_its_stack_started_resumes_without_redoing_a_step(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    built: BuiltStack,  # noqa: F811
    tmp_path: Path,
    kill_at: str,
) -> None:
    _source, target = engines
    restored = f"{built.stack.name}x"
    claim = tmp_path / "target" / ".davit" / f"{restored}.run"
    davit.start()
    backup(davit, docker_peer, built)
    after = max(e[0] for e in davit.events())  # the backup's events (it has steps of these names too)
    write_job(davit, "back.toml", restore_text(ssh_peer, built, tmp_path))

    def started(step: str) -> bool:
        return any(e[3]["step"] == step for e in davit.events(f"type = 'StepStarted' AND position > {after}"))

    davit.wait_for(lambda: started(kill_at), 300, f"step {kill_at} to start", poll=0.005)
    davit.kill9()
    at_kill = davit.runs("back")[-1]
    assert at_kill["state"] == "running", at_kill
    assert claim.is_symlink() and os.readlink(claim) == at_kill["run_id"], "the dead run still holds the name"

    davit.start()
    run = davit.wait_run_state("back", {"succeeded", "failed", "rolled_back"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["interruptions"] == 1
    completed = [e[3]["step"] for e in davit.events(f"type = 'StepCompleted' AND position > {after}")]
    assert len(completed) == len(set(completed)), f"a step completed twice: {completed}"
    assert states(target, restored) == {"app": "running", "side": "running"}
    assert image_id(target, f"{restored}-app") == built.image_id
    assert not claim.is_symlink() and not claim.parent.joinpath(restored).exists(), "claim and store gone at finalize"

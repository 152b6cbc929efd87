"""compose.migrate through davitd from a source reached over SSH, with an image built on the
source engine only: the image travels (exported there, filtered by davitd, sent as chunks),
keeps its ID on the target, and a second migration sends no image. The sshd peer is the source
host (engine 1 through it) and the target (engine 2)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_compose_migrate_images import built_stack, job_text, step_summary, target_image_id
from tests.integration.compose.stack import cleanup
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]


def test_a_built_image_travels_from_an_ssh_source_through_davitd_and_a_second_migration_sends_none(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 2) as (stack, image_id):
        ref = f"{stack.name}-app"
        assert target_image_id(target, ref) is None
        over_ssh = (
            f'[source]\nhost = "{ssh_peer.host}"\nport = {ssh_peer.port}\nuser = "{ssh_peer.user}"\n'
            f'key_file = "{ssh_peer.key_file}"\nknown_hosts = "{ssh_peer.known_hosts}"\n'
        )
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target").replace("[source]\n", over_ssh))
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run
        sent = step_summary(run, "preflight")["images_to_send"]
        assert [(i["image"], i["id"], i["layers_on_target"]) for i in sent] == [(ref, image_id, 1)]
        assert target_image_id(target, ref) == image_id
        assert stack.states(target) == {"app": "running", "side": "running"}

        cleanup(stack, tmp_path / "target")  # the target's stack removed, its image kept
        stack.compose("up", "-d")
        davit.cli("run", "move", "--wait", "--timeout", "300")
        again = davit.runs("move")[-1]
        assert again["state"] == "succeeded", again
        assert step_summary(again, "preflight")["images_to_send"] == []
        assert target_image_id(target, ref) == image_id

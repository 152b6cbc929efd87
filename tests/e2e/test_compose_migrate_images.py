"""compose.migrate with images that exist only on the source: a service built from a `build:`
section (its image made on the source engine alone) travels with the stack, through davitd,
to the ssh peer's engine; the target gets the same image ID; a second migration sends no
image; a failed migration takes back the image it loaded; `kill -9` during the image's
transfer resumes sending only what the target's store lacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.compose_job import migrate_job_text
from tests.e2e.conftest import Davit, write_job
from tests.integration.compose.stack import Stack, built_image_stack, cleanup
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]

COMPOSE = """\
services:
  app:
    build: ./app
    command: ["sleep", "3600"]
{health}  side:
    image: {base}
    command: ["sleep", "3600"]
"""


def job_text(stack: Stack, ssh_peer: SshPeer, base: Path, extra: str = "") -> str:
    return migrate_job_text(stack, ssh_peer, base, extra=extra)


@contextmanager
def built_stack(
    tmp_path: Path, docker_peer: DockerPeer, ssh_peer: SshPeer, source: docker.DockerClient, blob_mib: int, health: str = ""
) -> Iterator[tuple[Stack, str]]:
    """A running stack whose `app` service's image was built on the source only (the peer's
    test image plus `blob_mib` MiB of random bytes); yields it and that image's ID."""
    compose = COMPOSE.format(health=health, base=docker_peer.image)
    with built_image_stack(tmp_path, docker_peer, ssh_peer, source, compose, prefix="davitimg", blob_mib=blob_mib) as made:
        yield made


def target_image_id(target: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(target.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def step_summary(run: dict[str, Any], step: str) -> dict[str, Any]:
    return dict(run["steps"][step]["summary"])


def test_a_built_image_travels_with_its_stack_and_a_second_migration_sends_no_image(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 2) as (stack, image_id):
        assert target_image_id(target, f"{stack.name}-app") is None
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target"))
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run
        sent = step_summary(run, "preflight")["images_to_send"]
        assert [(i["image"], i["id"]) for i in sent] == [(f"{stack.name}-app", image_id)]
        assert sent[0]["layers_on_target"] == 1  # the peer's test image, its base, is there already
        assert target_image_id(target, f"{stack.name}-app") == image_id
        assert stack.states(target) == {"app": "running", "side": "running"}

        # the same stack again, the target's stack removed but its image kept: nothing to send
        cleanup(stack, tmp_path / "target")
        stack.compose("up", "-d")
        davit.cli("run", "move", "--wait", "--timeout", "300")
        again = davit.runs("move")[-1]
        assert again["state"] == "succeeded", again
        assert step_summary(again, "preflight")["images_to_send"] == []
        assert not [i for i in step_summary(again, "import")["imported"] if i.startswith("image-")]
        assert target_image_id(target, f"{stack.name}-app") == image_id


def test_a_failed_migration_removes_the_image_it_loaded(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    # `app` is healthy only where its container holds a flag file, which only the source's
    # does (a container's own files do not move): on the target it turns unhealthy, verify fails
    health = '    healthcheck: {test: ["CMD", "test", "-e", "/tmp/on-source"], interval: 1s, retries: 3}\n'
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 1, health) as (stack, image_id):
        stack.compose("exec", "-T", "app", "touch", "/tmp/on-source")
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target"))
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "rolled_back", run
        assert f"{stack.name}-app" in str(step_summary(run, "import")["images_tagged"])
        assert step_summary(run, "rollback_target")["images"] == [f"untagged {stack.name}-app", f"removed {image_id}"]
        assert target_image_id(target, image_id) is None
        assert target_image_id(target, ssh_peer.image) is not None  # its base layer's image stays
        assert stack.states(source) == {"app": "running", "side": "running"}


def test_images_none_leaves_a_built_image_behind_and_preflight_says_the_target_lacks_it(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 1) as (stack, image_id):
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target", extra='images = "none"'))
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "rolled_back", run
        assert step_summary(run, "preflight")["images_to_send"] == []
        assert step_summary(run, "preflight")["images_missing"] == [f"{stack.name}-app"]
        warnings = [e[3]["message"] for e in davit.events("type = 'RunWarning'")]
        assert any(f"{stack.name}-app" in w and "never pulled" in w for w in warnings), warnings
        assert target_image_id(target, image_id) is None
        assert stack.states(source) == {"app": "running", "side": "running"}


@pytest.mark.slow
def test_migration_killed_during_the_image_transfer_resumes_sending_only_what_is_missing(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 48) as (stack, image_id):
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, tmp_path / "target"))

        def transfer_checkpoints() -> list[dict[str, Any]]:
            return [e[3] for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "transfer"]

        # the stack has no volume and no bind: every byte the transfer records is the image's
        davit.wait_for(lambda: bool(transfer_checkpoints()), 300, "a transfer checkpoint", poll=0.005)
        davit.kill9()
        confirmed = max(int(c["cursor"]["bytes_sent"]) for c in transfer_checkpoints())
        at_kill = davit.runs("move")[-1]
        assert at_kill["state"] == "running" and at_kill["steps"]["transfer"]["status"] != "done"
        assert target_image_id(target, image_id) is None

        davit.start()
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run
        assert run["interruptions"] == 1
        transfer = step_summary(run, "transfer")
        assert transfer["already_on_target"] >= 1
        assert transfer["bytes_sent"] == transfer["bytes_missing"]
        assert transfer["bytes_missing"] <= transfer["bytes_needed"] - confirmed
        assert target_image_id(target, f"{stack.name}-app") == image_id
        assert stack.states(target) == {"app": "running", "side": "running"}

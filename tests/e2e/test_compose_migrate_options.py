"""compose.migrate's `keep_failed_target`, `remove_source` and `remove_source_volumes` through
davitd, as an operator uses them: a job file dropped into the jobs directory (scheduled far
ahead, so it runs when asked), `davit run --wait`, then both engines looked at.

- verify fails with `keep_failed_target = true`: the run is rolled back, the target's stack is
  left as it was (its containers, its volume with the moved data, its project directory) and
  the source's containers run again;
- a migration that succeeds with `remove_source = true` removes the source's containers and
  networks, and with `remove_source_volumes = true` its volume too (without it, the volume stays).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest

from tests.e2e.compose_job import migrate_job_text
from tests.e2e.conftest import Davit, write_job
from tests.integration.compose.stack import Stack, cleanup, digest
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]

# `app` is healthy only where its container holds /tmp/flag: the test touches it in the source's
# container, where wanted; a container's own files do not move, so on the target it stays unhealthy
COMPOSE = """\
services:
  app:
    image: {image}
    command: ["sh", "-c", "test -e /data/seed || head -c 300000 /dev/urandom > /data/seed; sleep 3600"]
    volumes: ["appdata:/data"]
{health}volumes:
  appdata: {{}}
"""
FLAGGED = '    healthcheck: {test: ["CMD", "test", "-e", "/tmp/flag"], interval: 1s, timeout: 5s, retries: 3}\n'


@contextmanager
def a_stack(tmp_path: Path, docker_peer: DockerPeer, ssh_peer: SshPeer, health: str = "") -> Iterator[Stack]:
    name = f"davitopt{uuid.uuid4().hex[:8]}"
    d = tmp_path / "src" / name
    d.mkdir(parents=True)
    (d / "compose.yaml").write_text(COMPOSE.format(image=docker_peer.image, health=health))
    stack = Stack(name, d, docker_peer.host, ssh_peer.docker_host)
    try:
        stack.compose("up", "-d")
        yield stack
    finally:
        cleanup(stack, tmp_path / "target")


def run_job(davit: Davit, stack: Stack, ssh_peer: SshPeer, base: Path, options: str) -> tuple[int, str]:
    """Drop the job file, wait until davitd defined it, `davit run --wait`: exit code, run ID."""
    write_job(
        davit,
        "move.toml",
        migrate_job_text(stack, ssh_peer, base, verify_timeout=40, extra=f'schedule = "0 0 1 1 *"\n{options}'),
    )
    davit.wait_for(lambda: [j["name"] for j in davit.json_lines("jobs")] == ["move"], 30, "the job defined")
    done = davit.cli("run", "move", "--wait", "--timeout", "300", check=False, timeout=360)
    return done.returncode, done.stdout.strip()


def health(client: docker.DockerClient, stack: Stack) -> str:
    [c] = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.name}"})
    return str(((c.attrs.get("State") or {}).get("Health") or {}).get("Status", ""))


def volume_names(client: docker.DockerClient, stack: Stack) -> list[str]:
    return [v.name for v in client.volumes.list(filters={"name": stack.name})]


def test_a_failed_verify_with_keep_failed_target_leaves_the_target_stack_and_restarts_the_source(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with a_stack(tmp_path, docker_peer, ssh_peer, FLAGGED) as stack:
        stack.compose("exec", "-T", "app", "touch", "/tmp/flag")
        davit.wait_for(lambda: health(source, stack) == "healthy", 60, "the source's app to be healthy", poll=0.5)
        before = digest(stack.volume_dir(source))
        davit.start()
        code, run_id = run_job(davit, stack, ssh_peer, tmp_path / "target", "keep_failed_target = true")

        [run] = [r for r in davit.runs("move") if r["run_id"] == run_id]
        assert code == 1 and run["state"] == "rolled_back", run
        assert run["steps"]["verify"]["status"] != "done"
        assert run["steps"]["rollback_target"]["summary"] == {"removed": False}
        # the target's stack as the failed verify left it: containers, moved data, project directory
        assert set(stack.states(target)) == {"app"}
        assert volume_names(target, stack) == [f"{stack.name}_appdata"]
        assert digest(stack.volume_dir(target)) == before
        assert (tmp_path / "target" / stack.name / "compose.yaml").is_file()
        # and the source runs again, its data untouched
        assert run["steps"]["restart_source"]["status"] == "done"
        assert stack.states(source) == {"app": "running"}
        assert digest(stack.volume_dir(source)) == before


@pytest.mark.parametrize("with_volumes", [True, False], ids=["remove_source_volumes", "volumes-kept"])
def test_a_successful_migration_with_remove_source_removes_the_source_and_its_volumes_only_when_asked(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
    with_volumes: bool,
) -> None:
    source, target = engines
    with a_stack(tmp_path, docker_peer, ssh_peer) as stack:
        stack.compose("up", "-d", "--wait")
        before = digest(stack.volume_dir(source))
        label = f"com.docker.compose.project={stack.name}"
        assert source.networks.list(filters={"label": label})
        davit.start()
        options = "remove_source = true" + ("\nremove_source_volumes = true" if with_volumes else "")
        code, run_id = run_job(davit, stack, ssh_peer, tmp_path / "target", options)

        [run] = [r for r in davit.runs("move") if r["run_id"] == run_id]
        assert code == 0 and run["state"] == "succeeded", run
        assert stack.states(target) == {"app": "running"}
        assert digest(stack.volume_dir(target)) == before
        assert stack.states(source) == {}, "the source's containers are gone"
        assert not source.networks.list(filters={"label": label})
        removed = run["steps"]["finalize"]["summary"]["removed"]
        if with_volumes:
            assert volume_names(source, stack) == []
            assert f"volume {stack.name}_appdata" in removed
        else:
            assert volume_names(source, stack) == [f"{stack.name}_appdata"]
            assert digest(stack.volume_dir(source)) == before
            assert not [r for r in removed if r.startswith("volume ")]

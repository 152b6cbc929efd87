"""compose.migrate through davitd, as an operator runs it, of a stack with a bind mount outside
its project: `path_map` in the job file puts the data at the mapped place, and `remove_source`
with `remove_source_volumes` leaves nothing of the stack on the source engine but its bind data."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_compose_migrate import job_text
from tests.integration.compose.stack import cleanup, digest, make_stack
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]


def test_a_mapped_outside_bind_moves_and_remove_source_leaves_no_container_network_or_volume(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    uploads = tmp_path / "srv" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "photo.bin").write_bytes(os.urandom(150_000))
    stack = make_stack(tmp_path, docker_peer, ssh_peer)
    try:
        compose = stack.dir / "compose.yaml"
        compose.write_text(compose.read_text().replace('"./site:/site"]', f'"./site:/site", "{uploads}:/uploads"]'))
        stack.compose("up", "-d", "--wait")
        before_volume, before_uploads = digest(stack.volume_dir(source)), digest(uploads)
        mapped = tmp_path / "data" / "uploads"
        davit.start()
        text = job_text(stack, ssh_peer, tmp_path / "target").replace(
            "stop_timeout = 1\n",
            f'stop_timeout = 1\nremove_source = true\nremove_source_volumes = true\npath_map = {{ "{uploads}" = "{mapped}" }}\n',
        )
        write_job(davit, "move.toml", text)
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", run

        assert stack.states(target) == {"web": "running", "worker": "running"}
        assert digest(mapped) == before_uploads and digest(stack.volume_dir(target)) == before_volume
        assert str(mapped) in (tmp_path / "target" / stack.name / "compose.yaml").read_text()
        assert stack.states(source) == {}, "the source's containers are gone"
        assert not source.networks.list(filters={"label": f"com.docker.compose.project={stack.name}"})
        assert not source.volumes.list(filters={"name": stack.name}), "the source's volume is gone"
        assert digest(uploads) == before_uploads, "bind data on the source is never removed"
    finally:
        cleanup(stack, tmp_path / "target")

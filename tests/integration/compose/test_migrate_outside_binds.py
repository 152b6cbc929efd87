"""compose.migrate of a stack with a bind mount outside its project directory, against the real
peers (engine 1 local, engine 2 behind sshd): `path_map` puts its data at the mapped place and
the compose file written on the target names it there; unmapped (`outside_binds = "fail"`, the
default), or mapped through a symlink planted on the target, pre-flight fails before anything
is stopped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from davit.adapters.compose.migrate import INSPECT, STOP
from davit.adapters.compose.target import PreflightFailed
from tests.integration.compose.stack import Stack, cleanup, digest, make_stack
from tests.integration.compose.test_migrate_adapter import SummaryContext, job, work_for
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


@pytest.fixture
def outside_stack(docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    """The test stack whose web service also mounts `<tmp>/srv/uploads` (outside its project) at /uploads."""
    uploads = tmp_path / "srv" / "uploads"
    (uploads / "img").mkdir(parents=True)
    (uploads / "img" / "a.bin").write_bytes(os.urandom(200_000))
    (uploads / "readme.txt").write_text("sail\n")
    os.chmod(uploads / "readme.txt", 0o604)
    stack = make_stack(tmp_path, docker_peer, ssh_peer)
    compose = stack.dir / "compose.yaml"
    compose.write_text(compose.read_text().replace('"./site:/site"]', f'"./site:/site", "{uploads}:/uploads"]'))
    stack.compose("up", "-d", "--wait")
    yield stack, uploads
    cleanup(stack, tmp_path / "target")


def test_a_mapped_outside_bind_lands_at_its_mapped_place_and_the_compose_file_names_it(
    outside_stack: tuple[Stack, Path], ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    stack, uploads = outside_stack
    _source, target = engines
    mapped = tmp_path / "data" / "shop"
    before = digest(uploads)
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", path_map={str(uploads.parent): str(mapped)}), tmp_path)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)

    assert stack.states(target) == {"web": "running", "worker": "running"}
    assert digest(mapped / "uploads") == before, "the data is identical at the mapped place"
    written = (tmp_path / "target" / stack.name / "compose.yaml").read_text()
    assert f'"{mapped}/uploads:/uploads"' in written and str(uploads) not in written
    web = target.containers.list(
        filters={"label": [f"com.docker.compose.project={stack.name}", "com.docker.compose.service=web"]}
    )
    assert web[0].exec_run(["cat", "/uploads/readme.txt"]).output == b"sail\n"
    assert digest(uploads) == before, "the source's outside directory is left as it was"
    assert ctx.summaries[INSPECT]["outside"] == []


def test_an_unmapped_outside_bind_fails_preflight_naming_service_and_path_before_anything_stops(
    outside_stack: tuple[Stack, Path], ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    stack, uploads = outside_stack
    source, target = engines
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path)
    work.prepare(ctx)
    with pytest.raises(PreflightFailed, match=f"service web bind-mounts {uploads}, outside the project directory"):
        work.run(ctx)
    assert STOP not in ctx.cursors and not work.needs_rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"} and stack.states(target) == {}
    assert not (tmp_path / "target").exists(), "nothing was written on the target"


def test_a_mapped_place_reached_through_a_symlink_on_the_target_fails_preflight(
    outside_stack: tuple[Stack, Path], ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    stack, uploads = outside_stack
    source, _target = engines
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").symlink_to(elsewhere)  # planted: /…/data -> elsewhere
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", path_map={str(uploads): str(tmp_path / "data" / "up")}), tmp_path)
    work.prepare(ctx)
    with pytest.raises(PreflightFailed, match=f"symlink on the target: {tmp_path / 'data'}"):
        work.run(ctx)
    assert STOP not in ctx.cursors and stack.states(source) == {"web": "running", "worker": "running"}
    assert list(elsewhere.iterdir()) == [], "nothing was written through the symlink"

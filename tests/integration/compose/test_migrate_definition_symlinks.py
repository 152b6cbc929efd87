"""compose.migrate of a stack whose definition files include a symlink out of the project
directory (`definition.py`'s rule), against the real peers: by default the file it leads to is
not read (a warning names the link and where it leads), also when the link is planted after
inspect; with `follow_definition_symlinks = true` its content goes under its name."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from davit.adapters.compose.migrate import INSPECT, DefinitionSymlinkedOut
from tests.integration.compose.stack import cleanup, make_stack
from tests.integration.compose.test_migrate_adapter import SummaryContext, job, work_for
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]
KEY = "api-key-bollard-secret\n"  # what the stack's secret file holds (`stack.DEFINITION_FILES`)


def link_out(project: Path, rel: str, host_dir: Path) -> Path:
    """Replace the project's file `rel` by a symlink to a host file (same content) outside it."""
    host_dir.mkdir(exist_ok=True)
    host_file = host_dir / rel.replace("/", "_")
    host_file.write_bytes((project / rel).read_bytes())
    (project / rel).unlink()
    os.symlink(host_file, project / rel)
    return host_file


def test_a_secret_file_symlinked_out_of_the_project_is_not_read_by_default(
    docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path
) -> None:
    stack = make_stack(tmp_path, docker_peer, ssh_peer, with_files=True)
    try:
        host_file = link_out(stack.dir, "secrets/api.key", tmp_path / "host")
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", dry_run=True), tmp_path)
        work.prepare(ctx)
        work.run(ctx)
        assert "secrets/api.key" not in ctx.summaries[INSPECT]["files"]
        assert "env/worker.env" in ctx.summaries[INSPECT]["files"]
        assert any(f"{stack.dir / 'secrets' / 'api.key'} -> {host_file}" in w for w in ctx.warnings), ctx.warnings
    finally:
        cleanup(stack, tmp_path / "target")


def test_a_definition_file_swapped_for_a_symlink_out_after_inspect_is_not_read_when_written(
    docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path
) -> None:
    stack = make_stack(tmp_path, docker_peer, ssh_peer, with_files=True)
    try:
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", dry_run=True), tmp_path)
        work.prepare(ctx)
        work.run(ctx)  # inspect saw a regular file
        assert "env/worker.env" in ctx.summaries[INSPECT]["files"]
        host_file = link_out(stack.dir, "env/worker.env", tmp_path / "host")
        host_file.write_text("HOST_ONLY=davit-must-not-copy\n")
        with pytest.raises(DefinitionSymlinkedOut) as raised:
            work._write(ctx)
        assert f"{stack.dir / 'env' / 'worker.env'} of compose project {stack.name} now resolves to {host_file}," in str(
            raised.value
        )
        assert not (tmp_path / "target" / stack.name).exists(), "the project was written on the target"
    finally:
        cleanup(stack, tmp_path / "target")


def test_with_follow_definition_symlinks_the_files_content_goes_under_its_name(
    docker_peer: DockerPeer, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    _source, target = engines
    stack = make_stack(tmp_path, docker_peer, ssh_peer, with_files=True)
    try:
        link_out(stack.dir, "secrets/api.key", tmp_path / "host")
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", follow_definition_symlinks=True), tmp_path)
        work.prepare(ctx)
        work.run(ctx)
        work.finish(ctx)
        assert stack.states(target) == {"web": "running", "worker": "running"}
        copied = tmp_path / "target" / stack.name / "secrets" / "api.key"
        assert not copied.is_symlink() and copied.read_text() == KEY
    finally:
        cleanup(stack, tmp_path / "target")

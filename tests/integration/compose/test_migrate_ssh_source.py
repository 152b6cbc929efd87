"""compose.migrate with its source engine on a host reached over SSH (`[source] host = ...`):
davitd moves a stack between two hosts, neither of them its own engine.

The peers: the sshd peer runs on this machine, so a session on it reaches both engines; the
source is that sshd with `engine` = engine 1's socket, the target the same sshd with its own
DOCKER_HOST, engine 2. Since both "hosts" share this file system, every test here forbids
the local source's ways in (the Docker SDK client, `inspect_project`, `tar` run as a local
subprocess, this host's reads of the definition files): what moved, moved through the source's
SSH session. Driven without a daemon, as `test_migrate_adapter.py` does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import asyncssh
import docker
import pytest

from davit.adapters.compose import migrate, pipeline
from davit.adapters.compose.migrate import FINALIZE, IMPORT, INSPECT, ROLLBACK_TARGET, START, STOP, TRANSFER, ComposeMigrateWork
from davit.adapters.compose.sshsource import SshSourceMigrateWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.adapters.ssh.remote import RemoteCommandFailed
from davit.adapters.sshtrust import HostKeyRejected
from davit.domain.jobs import ComposeMigrateJob
from tests.integration.compose.stack import DEFINITION_FILES, Stack, cleanup, digest, make_stack
from tests.integration.compose.test_migrate_adapter import SummaryContext
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


class Crash(Exception):
    """davitd killed at a checkpoint: the run's state is what the checkpoints recorded."""


class CrashAtFirstTransferCheckpoint(SummaryContext):
    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def checkpoint(self, step: str, cursor: dict[str, Any], **kw: Any) -> None:
        super().checkpoint(step, cursor, **kw)
        if step == TRANSFER and self.armed:
            self.armed = False
            raise Crash


def _local_source_used(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("the source is on another host: nothing of it is read on this one")


@pytest.fixture(autouse=True)
def no_local_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ComposeMigrateWork, "client", property(_local_source_used))
    monkeypatch.setattr(migrate, "inspect_project", _local_source_used)
    monkeypatch.setattr(migrate, "require_gnu_tar", _local_source_used)
    monkeypatch.setattr(migrate, "start_containers", _local_source_used)
    monkeypatch.setattr(migrate, "Path", _local_source_used)
    monkeypatch.setattr(pipeline, "subprocess", SimpleNamespace(Popen=_local_source_used, PIPE=-1))


def job(stack: Stack, ssh_peer: SshPeer, base: Path, source_known_hosts: str | None = None, **extra: Any) -> ComposeMigrateJob:
    return ComposeMigrateJob.model_validate(
        {
            "name": "move",
            "kind": "compose.migrate",
            "verify_timeout": 90,
            "stop_timeout": 1,
            "images": "none",
            "source": {
                "project": stack.name,
                "engine": stack.source_host,  # engine 1, as the source host's session reaches it
                "host": ssh_peer.host,
                "port": ssh_peer.port,
                "user": ssh_peer.user,
                "key_file": ssh_peer.key_file,
                "known_hosts": source_known_hosts or ssh_peer.known_hosts,
            },
            "target": {
                "host": ssh_peer.host,
                "port": ssh_peer.port,
                "user": ssh_peer.user,
                "key_file": ssh_peer.key_file,
                "known_hosts": ssh_peer.known_hosts,
                "base_path": str(base),
                "helper_image": ssh_peer.image,
            },
            **extra,
        }
    )


def work_for(spec: ComposeMigrateJob, tmp_path: Path) -> ComposeMigrateWork:
    return ComposeMigrateWork(RunInputs(spec, "mig1", Tuning(), repo=Repository.open(tmp_path / "repo")))


def test_a_stack_on_a_host_reached_over_ssh_moves_to_another_host_with_identical_data(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    before_volume, before_site = digest(stack.volume_dir(source)), digest(stack.dir / "site")
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path)
    assert isinstance(work, SshSourceMigrateWork)
    details = work.prepare(ctx)
    work.run(ctx)
    summary = work.finish(ctx)

    assert details["source"] == f"{ssh_peer.user}@{ssh_peer.host}:{ssh_peer.port}"
    assert summary["services"] == ["web", "worker"]
    assert ctx.summaries[INSPECT]["model"]["services"]["web"]["environment"] == {"GREETING": "***", "DB_PASSWORD": "***"}
    assert ctx.summaries["preflight"]["source_tar"]
    assert stack.states(target) == {"web": "running", "worker": "running"}
    assert digest(stack.volume_dir(target)) == before_volume
    project_dir = tmp_path / "target" / stack.name
    assert digest(project_dir / "site") == before_site
    assert (project_dir / ".env").read_text() == (stack.dir / ".env").read_text()
    assert stack.states(source) == {"web": "exited", "worker": "exited"}
    # the store stays as a transfer cache (`keep_transfer_cache`, the default): its chunks only
    assert [p.name for p in (tmp_path / "target" / ".davit" / stack.name).iterdir()] == ["chunks"]


def test_a_migration_from_an_ssh_source_cut_after_its_first_item_resumes_sending_only_what_the_target_lacks(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    before_volume, before_site = digest(stack.volume_dir(source)), digest(stack.dir / "site")
    spec = job(stack, ssh_peer, tmp_path / "target")
    ctx = CrashAtFirstTransferCheckpoint()
    first = work_for(spec, tmp_path)
    first.prepare(ctx)
    with pytest.raises(Crash):
        first.run(ctx)
    # the first item is in the target's store, its import not recorded: redone on resume
    sent_before = ctx.cursors[TRANSFER]["chunks_sent"]
    assert sent_before >= 1 and IMPORT not in ctx.cursors

    resumed = work_for(spec, tmp_path)  # a new davitd, the same recorded run
    resumed.prepare(ctx)
    resumed.run(ctx)
    transfer = ctx.summaries[TRANSFER]
    assert transfer["already_on_target"] == sent_before, "the first item's chunks were not sent again"
    assert transfer["chunks_sent"] == transfer["chunks"] - sent_before
    assert digest(stack.volume_dir(target)) == before_volume
    assert digest(tmp_path / "target" / stack.name / "site") == before_site
    assert stack.states(target) == {"web": "running", "worker": "running"}


def test_a_failure_at_start_target_restarts_the_source_on_its_own_host(
    docker_peer: DockerPeer, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    only_here = "davit-test/only-on-source:1"
    source.images.get(docker_peer.image).tag(only_here)
    stack = make_stack(tmp_path, docker_peer, ssh_peer, web_image=only_here)
    try:
        before_volume = digest(stack.volume_dir(source))
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path)
        work.prepare(ctx)
        with pytest.raises(RemoteCommandFailed, match="only-on-source"):
            work.run(ctx)
        assert START not in ctx.done and STOP in ctx.done
        assert stack.states(source) == {"web": "exited", "worker": "exited"}
        assert work.needs_rollback(ctx)
        work.rollback(ctx)
        assert ROLLBACK_TARGET in ctx.done
        assert ctx.summaries["restart_source"]["started"] == sorted(c["name"] for c in ctx.cursors[STOP]["containers"])
        assert stack.states(source) == {"web": "running", "worker": "running"}
        assert digest(stack.volume_dir(source)) == before_volume
        assert stack.states(target) == {}
    finally:
        cleanup(stack, tmp_path / "target")


def test_an_unknown_source_host_key_fails_before_anything_is_stopped(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, _ = engines
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known = tmp_path / "source_known_hosts"
    known.write_text(f"[{ssh_peer.host}]:{ssh_peer.port} {other}")
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", source_known_hosts=str(known)), tmp_path)
    work.prepare(ctx)
    with pytest.raises(HostKeyRejected, match="never accepts an unknown host key"):
        work.run(ctx)
    assert INSPECT not in ctx.done and STOP not in ctx.cursors and not work.needs_rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"}


def test_a_stack_defined_across_files_moves_from_an_ssh_source_which_remove_source_then_removes_with_its_volumes(
    docker_peer: DockerPeer, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    stack = make_stack(tmp_path, docker_peer, ssh_peer, with_files=True)
    try:
        before_volume = digest(stack.volume_dir(source))
        ctx = SummaryContext()
        spec = job(stack, ssh_peer, tmp_path / "target", remove_source=True, remove_source_volumes=True)
        work = work_for(spec, tmp_path)
        work.prepare(ctx)
        work.run(ctx)
        work.finish(ctx)

        assert stack.states(target) == {"web": "running", "worker": "running"}
        assert digest(stack.volume_dir(target)) == before_volume
        project_dir = tmp_path / "target" / stack.name
        for rel in DEFINITION_FILES:  # found through the source's session: extends, env files, configs, secrets
            assert (project_dir / rel).is_file(), f"{rel} was not copied"
        assert (project_dir / "secrets" / "api.key").stat().st_mode & 0o777 == 0o600
        assert (project_dir / "conf" / "app.conf").read_bytes() == (stack.dir / "conf" / "app.conf").read_bytes()
        assert (project_dir / "common" / "base.yaml").read_text() == DEFINITION_FILES["common/base.yaml"]

        assert stack.states(source) == {}, "the source's containers are gone, on its host"
        assert not source.networks.list(filters={"label": f"com.docker.compose.project={stack.name}"})
        assert not source.volumes.list(filters={"name": stack.name})
        assert f"volume {stack.name}_appdata" in ctx.summaries[FINALIZE]["removed"]
        assert (stack.dir / "site" / "index.html").is_file(), "bind-mounted data on the source is never removed"
    finally:
        cleanup(stack, tmp_path / "target")

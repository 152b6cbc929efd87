"""compose.migrate against the real peers (engine 1 local, engine 2 behind sshd), driven
without a daemon: the adapter's steps, and its rollback as the executor would call it; the
finalize options (`remove_source`, `remove_source_volumes`) and `keep_failed_target`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncssh
import docker
import pytest

from davit.adapters.compose.migrate import EXPORT, FINALIZE, INSPECT, ROLLBACK_TARGET, START, STOP, TRANSFER, ComposeMigrateWork
from davit.adapters.compose.target import PreflightFailed
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.adapters.ssh.remote import RemoteCommandFailed
from davit.adapters.sshtrust import HostKeyRejected
from davit.adapters.steps import run_steps
from davit.domain.jobs import ComposeMigrateJob
from tests.fakes import ProgressRunContext
from tests.integration.compose.narrow_target import target_without
from tests.integration.compose.stack import DEFINITION_FILES, Stack, cleanup, digest, make_stack
from tests.integration.docker.bare_image import bare_image
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


class SummaryContext(ProgressRunContext):
    def __init__(self) -> None:
        super().__init__()
        self.summaries: dict[str, dict[str, Any]] = {}

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        self.summaries[step] = summary
        super().step_completed(step, summary)


def job(stack: Stack, ssh_peer: SshPeer, base: Path, known_hosts: str | None = None, **extra: Any) -> ComposeMigrateJob:
    return ComposeMigrateJob.model_validate(
        {
            "name": "move",
            "kind": "compose.migrate",
            "verify_timeout": 90,
            "stop_timeout": 1,
            "source": {"project": stack.name, "engine": stack.source_host},
            "target": {
                "host": ssh_peer.host,
                "port": ssh_peer.port,
                "user": ssh_peer.user,
                "key_file": ssh_peer.key_file,
                "known_hosts": known_hosts or ssh_peer.known_hosts,
                "base_path": str(base),
                "helper_image": ssh_peer.image,
            },
            **extra,
        }
    )


def work_for(spec: ComposeMigrateJob, tmp_path: Path, run_id: str = "mig1") -> ComposeMigrateWork:
    return ComposeMigrateWork(RunInputs(spec, run_id, Tuning(), repo=Repository.open(tmp_path / "repo")))


@contextmanager
def stack_failing_at_start_target(
    source: docker.DockerClient, docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path
) -> Iterator[Stack]:
    """A stack whose web image is on the source engine only, so starting it on the target fails
    (with `images = "none"`, which the tests using it set); cleaned up afterwards."""
    only_here = "davit-test/only-on-source:1"
    source.images.get(docker_peer.image).tag(only_here)
    stack = make_stack(tmp_path, docker_peer, ssh_peer, web_image=only_here)
    try:
        yield stack
    finally:
        cleanup(stack, tmp_path / "target")


def test_migration_moves_the_stack_with_identical_data_and_leaves_the_source_stopped(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    before_volume, before_site = digest(stack.volume_dir(source)), digest(stack.dir / "site")
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path)
    work.prepare(ctx)
    work.run(ctx)
    summary = work.finish(ctx)

    assert summary["services"] == ["web", "worker"]
    recorded_env = ctx.summaries[INSPECT]["model"]["services"]["web"]["environment"]
    assert recorded_env == {"GREETING": "***", "DB_PASSWORD": "***"}, "no environment value reaches the log"
    assert stack.states(target) == {"web": "running", "worker": "running"}
    assert target.containers.list(filters={"label": f"com.docker.compose.project={stack.name}", "health": "healthy"})
    assert digest(stack.volume_dir(target)) == before_volume
    project_dir = tmp_path / "target" / stack.name
    assert digest(project_dir / "site") == before_site
    assert (project_dir / ".env").read_text() == (stack.dir / ".env").read_text()
    assert stack.states(source) == {"web": "exited", "worker": "exited"}
    # the store stays as a transfer cache (`keep_transfer_cache`, the default): its chunks only
    assert [p.name for p in (tmp_path / "target" / ".davit" / stack.name).iterdir()] == ["chunks"]
    # the data steps' checkpoints carry inspect's sizes as their totals, the transfer's too
    for step in (EXPORT, TRANSFER):
        points = ctx.of(step)
        assert points and all(p["bytes_total"] == ctx.summaries[INSPECT]["bytes"] > 0 for p in points), step
    assert ctx.of(TRANSFER)[-1]["bytes_done"] <= ctx.of(TRANSFER)[-1]["bytes_total"]


def test_a_failure_at_start_target_rolls_back_and_the_source_runs_with_its_data(
    docker_peer: DockerPeer, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    with stack_failing_at_start_target(source, docker_peer, ssh_peer, tmp_path) as stack:
        before_volume = digest(stack.volume_dir(source))
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", images="none"), tmp_path)
        work.prepare(ctx)
        with pytest.raises(RemoteCommandFailed, match="only-on-source"):
            work.run(ctx)
        assert START not in ctx.done and {STOP, EXPORT, TRANSFER} <= ctx.done
        assert work.needs_rollback(ctx)
        work.rollback(ctx)
        assert ROLLBACK_TARGET in ctx.done
        assert stack.states(source) == {"web": "running", "worker": "running"}
        assert digest(stack.volume_dir(source)) == before_volume
        assert stack.states(target) == {}
        assert not target.volumes.list(filters={"name": stack.name})
        assert not (tmp_path / "target" / stack.name).exists()


def test_an_unknown_host_key_fails_before_anything_is_stopped(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, _ = engines
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{ssh_peer.host}]:{ssh_peer.port} {other}")
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", known_hosts=str(known)), tmp_path)
    work.prepare(ctx)
    with pytest.raises(HostKeyRejected, match="never accepts an unknown host key"):
        work.run(ctx)
    assert STOP not in ctx.cursors and not work.needs_rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"}


def test_a_target_without_zstd_and_a_helper_image_without_tar_fail_preflight_before_anything_is_stopped(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    image = bare_image(target)
    with target_without(ssh_peer, tmp_path, {"zstd"}) as narrow:
        spec = job(stack, narrow, tmp_path / "target")
        spec = spec.model_copy(update={"target": spec.target.model_copy(update={"helper_image": image})})
        ctx = SummaryContext()
        work = work_for(spec, tmp_path)
        work.prepare(ctx)
        with pytest.raises(PreflightFailed) as failed:
            work.run(ctx)
    message = str(failed.value)
    assert f"pre-flight on {narrow.user}@{narrow.host}:{narrow.port} failed" in message
    assert "the target lacks zstd on its PATH" in message
    assert f"helper image {image} has no tar" in message
    assert STOP not in ctx.cursors and not work.needs_rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"}


def test_a_dry_run_inspects_and_checks_the_target_only(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", dry_run=True), tmp_path)
    work.prepare(ctx)
    work.run(ctx)
    summary = work.finish(ctx)
    assert summary["dry_run"] and ctx.done == {"inspect", "preflight"}
    assert ctx.summaries["preflight"]["compose"] and ctx.summaries["preflight"]["free_bytes"] > 0
    assert tuple(int(n) for n in ctx.summaries["preflight"]["source_tar"].split(".")) >= (1, 28)
    assert stack.states(source) == {"web": "running", "worker": "running"} and stack.states(target) == {}


@pytest.mark.parametrize("remove_volumes", [False, True], ids=["volumes-kept", "volumes-removed"])
def test_remove_source_removes_the_source_containers_and_its_volumes_only_when_asked(
    stack: Stack,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
    remove_volumes: bool,
) -> None:
    source, target = engines
    before_volume = digest(stack.volume_dir(source))
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", remove_source=True, remove_source_volumes=remove_volumes), tmp_path)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)

    assert stack.states(target) == {"web": "running", "worker": "running"}
    assert digest(stack.volume_dir(target)) == before_volume
    assert stack.states(source) == {}, "the source's containers are gone"
    assert not source.networks.list(filters={"label": f"com.docker.compose.project={stack.name}"})
    left = [v.name for v in source.volumes.list(filters={"name": stack.name})]
    if remove_volumes:
        assert left == [] and f"volume {stack.name}_appdata" in ctx.summaries[FINALIZE]["removed"]
    else:
        assert left == [f"{stack.name}_appdata"] and digest(stack.volume_dir(source)) == before_volume
    assert (stack.dir / "site" / "index.html").is_file(), "bind-mounted data on the source is never removed"


def test_keep_failed_target_leaves_the_failed_stack_stopped_with_its_files_and_volumes(
    docker_peer: DockerPeer, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    with stack_failing_at_start_target(source, docker_peer, ssh_peer, tmp_path) as stack:
        before_volume, before_site = digest(stack.volume_dir(source)), digest(stack.dir / "site")
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", keep_failed_target=True, images="none"), tmp_path)
        work.prepare(ctx)
        with pytest.raises(RemoteCommandFailed, match="only-on-source"):
            work.run(ctx)
        work.rollback(ctx)

        assert ctx.summaries[ROLLBACK_TARGET] == {"removed": False}
        assert stack.states(source) == {"web": "running", "worker": "running"}
        # compose may or may not have created the worker before it met the missing image
        on_target = stack.states(target)
        assert "running" not in on_target.values(), f"the failed target stack still runs: {on_target}"
        assert digest(stack.volume_dir(target)) == before_volume, "the target's volume was kept with its data"
        project_dir = tmp_path / "target" / stack.name
        assert digest(project_dir / "site") == before_site
        assert (project_dir / "compose.yaml").is_file() and (project_dir / ".env").is_file()


def test_remove_source_volumes_without_remove_source_is_refused_as_a_job(stack: Stack, ssh_peer: SshPeer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="remove_source_volumes = true needs remove_source = true"):
        job(stack, ssh_peer, tmp_path / "target", remove_source_volumes=True)


def test_env_files_extended_files_configs_and_secrets_go_with_the_project(
    docker_peer: DockerPeer, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    _source, target = engines
    stack = make_stack(tmp_path, docker_peer, ssh_peer, with_files=True)
    try:
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path)
        work.prepare(ctx)
        work.run(ctx)
        work.finish(ctx)

        assert stack.states(target) == {"web": "running", "worker": "running"}
        project_dir = tmp_path / "target" / stack.name
        for rel in DEFINITION_FILES:
            assert (project_dir / rel).is_file(), f"{rel} was not copied"
        assert not (project_dir / "env" / "optional.env").exists()
        assert (project_dir / "secrets" / "api.key").stat().st_mode & 0o777 == 0o600
        # a config is copied byte for byte (it names the source directory; only compose and env
        # files have that translated)
        assert (project_dir / "conf" / "app.conf").read_bytes() == (stack.dir / "conf" / "app.conf").read_bytes()

        def env_in(service: str, name: str) -> str:
            found = target.containers.list(
                filters={"label": [f"com.docker.compose.project={stack.name}", f"com.docker.compose.service={service}"]}
            )
            return found[0].exec_run(["sh", "-c", f'printf %s "${name}"']).output.decode()

        assert env_in("worker", "WORKER_MODE") == "night-shift"
        assert env_in("web", "BASE_ENV") == "from-base-env" and env_in("web", "FROM_BASE") == "yes"
        web = target.containers.list(
            filters={"label": [f"com.docker.compose.project={stack.name}", "com.docker.compose.service=web"]}
        )[0]
        assert web.exec_run(["cat", "/run/secrets/apikey"]).output == b"api-key-bollard-secret\n"
        assert web.exec_run(["cat", "/etc/app.conf"]).output == (stack.dir / "conf" / "app.conf").read_bytes()
        recorded = repr(ctx.summaries[INSPECT]) + repr(ctx.checkpoints)
        assert "oar-lock-secret" not in recorded and "api-key-bollard-secret" not in recorded
        assert set(DEFINITION_FILES) <= set(ctx.summaries[INSPECT]["files"]) and ctx.warnings == []
    finally:
        cleanup(stack, tmp_path / "target")


def migration_with_unopenable_repository(spec: ComposeMigrateJob, tmp_path: Path) -> ComposeMigrateWork:
    """The work as davitd builds it, its repository opened when first asked for; that repository's
    path is taken by a file (as good as a passphrase gone or a disk not mounted): opening it fails."""
    taken = tmp_path / "repo-taken"
    taken.write_text("not a repository\n")
    return ComposeMigrateWork(RunInputs(spec, "mig1", Tuning(), open_repo=lambda: Repository.open(taken)))


def test_finalize_tried_again_after_it_removed_the_source_volumes_completes(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    """A finalize cut short after it removed the source's volumes (the link to the target dropped
    at its `rm -rf`, davitd killed) is retried or resumed: the volume it already removed is not an
    error. Before, the retry failed on the missing volume every time, so the run could never end."""
    source, target = engines
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", remove_source=True, remove_source_volumes=True), tmp_path)
    work.prepare(ctx)
    work.run(ctx)
    assert not source.volumes.list(filters={"name": stack.name}), "the first finalize removed the source volume"
    [finalize] = [s for s in work.steps() if s.name == FINALIZE]
    again = finalize.work(ctx)
    assert again is not None and again["removed"] == [] and again["source"] == "removed"
    assert stack.states(target) == {"web": "running", "worker": "running"}


def test_a_repository_that_cannot_be_opened_fails_the_migration_before_anything_is_stopped(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    """Before the repository was opened lazily it was opened to build the work, so a run whose
    repository cannot be opened failed before `prepare`. Lazily, the migration's first use of it
    was in `finalize`, after the source (and its volumes) were removed: the run then failed and
    rolled back, removing the target too."""
    source, _target = engines
    before_volume = digest(stack.volume_dir(source))
    ctx = SummaryContext()
    work = migration_with_unopenable_repository(
        job(stack, ssh_peer, tmp_path / "target", remove_source=True, remove_source_volumes=True), tmp_path
    )
    with pytest.raises(OSError):
        work.prepare(ctx)
    assert not ctx.done
    assert stack.states(source) == {"web": "running", "worker": "running"}
    assert digest(stack.volume_dir(source)) == before_volume


def test_a_resumed_migration_whose_repository_cannot_be_opened_removes_nothing_at_finalize(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    """davitd stopped just before `finalize`; at its next start the repository cannot be opened:
    `finalize` fails before it removes the source, which the rollback can then start again."""
    source, _target = engines
    before_volume = digest(stack.volume_dir(source))
    spec = job(stack, ssh_peer, tmp_path / "target", remove_source=True, remove_source_volumes=True)
    ctx = SummaryContext()
    first = work_for(spec, tmp_path)
    first.prepare(ctx)
    steps = [s for s in first.steps() if s.name != FINALIZE]
    run_steps(ctx, steps, stop_between=True)  # everything but finalize, as before a shutdown
    assert FINALIZE not in ctx.done and {STOP, START} <= ctx.done

    resumed = migration_with_unopenable_repository(spec, tmp_path)
    with pytest.raises(OSError):
        resumed.run(ctx)
    assert FINALIZE not in ctx.done
    assert f"{stack.name}_appdata" in [v.name for v in source.volumes.list(filters={"name": stack.name})]
    assert digest(stack.volume_dir(source)) == before_volume
    assert set(stack.states(source)) == {"web", "worker"}, "the source's containers are still there to restart"
    assert resumed.needs_rollback(ctx)
    resumed.rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"}

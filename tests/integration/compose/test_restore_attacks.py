"""compose.restore attacked (issue 21), against the real peers: what a second run or a crafted
snapshot could do to a target. Each test here failed before the fix it names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.compose.binds import BindsMisplaced
from davit.adapters.compose.migrate import PREFLIGHT, ROLLBACK_TARGET, START
from davit.adapters.compose.restore import ComposeRestoreWork, ProjectExists
from davit.adapters.compose.target import PreflightFailed, TargetNotHealthy
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from davit.domain.jobs import ComposeRestoreJob
from tests.fakes import MemoryRunContext
from tests.integration.compose.restore_stack import BuiltStack, remove_image, remove_paths, remove_project, restore_job
from tests.integration.compose.test_restore_adapter import SMALL, backed_up, republish, states, target  # noqa: F401
from tests.integration.crafted_trees import store_chunk
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


class StopAfter(MemoryRunContext):
    """Stops the run once `step` is done (as a stop request between steps does)."""

    def __init__(self, run_id: str, step: str | None = None) -> None:
        super().__init__(run_id=run_id)
        self.stop_after = step
        self.summaries: dict[str, dict[str, Any]] = {}

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        super().step_completed(step, summary)
        self.summaries[step] = summary
        if step == self.stop_after:
            self.stop.set()


def work_as(repo: Repository, spec: ComposeRestoreJob, run_id: str, details: dict[str, Any] | None = None) -> ComposeRestoreWork:
    return ComposeRestoreWork(RunInputs(spec, run_id, SMALL, details, repo=repo))


@pytest.fixture
def name(backed_up: tuple[BuiltStack, Repository, str], ssh_peer: SshPeer, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    project = "atkrestore" + "".join(ch for ch in tmp_path.name[-6:].lower() if ch.isalnum())
    yield project
    remove_project(ssh_peer.docker_host, project)
    client = docker.DockerClient(base_url=ssh_peer.docker_host)
    try:
        for ref in (f"{project}-app", f"{project}-own:1"):
            try:
                client.images.remove(ref)
            except docker.errors.ImageNotFound:
                pass
    finally:
        client.close()
    remove_image(ssh_peer.docker_host, backed_up[0].image_id)
    remove_paths(tmp_path / "target", tmp_path / "mapped")


def test_two_restores_of_one_project_name_the_second_is_refused_and_cannot_touch_the_first(
    backed_up: tuple[BuiltStack, Repository, str],  # noqa: F811
    ssh_peer: SshPeer,
    target: docker.DockerClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    """Both prepared while the name is free; the first passes pre-flight and is stopped there
    (it has created nothing yet that names the project). Before the fix the second passed
    pre-flight too, unpacked into the first's volumes and store and started; a rollback of
    either then removed the other's project."""
    built, repo, snapshot = backed_up
    spec = restore_job(ssh_peer, snapshot, name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")})
    first_ctx, second_ctx = StopAfter("atk-first", PREFLIGHT), StopAfter("atk-second")
    first_details = work_as(repo, spec, "atk-first").prepare(first_ctx)
    second_details = work_as(repo, spec, "atk-second").prepare(second_ctx)
    with pytest.raises(RunStopped):
        work_as(repo, spec, "atk-first", first_details).run(first_ctx)
    assert PREFLIGHT in first_ctx.done

    second = work_as(repo, spec, "atk-second", second_details)
    with pytest.raises(PreflightFailed, match="another run \\(atk-first\\) is restoring project"):
        second.run(second_ctx)
    assert PREFLIGHT not in second_ctx.done and not second.needs_rollback(second_ctx)
    with pytest.raises(ProjectExists, match="a restore of that name under way \\(run atk-first"):
        work_as(repo, spec, "atk-third").prepare(StopAfter("atk-third"))

    first_ctx.stop.clear()
    first_ctx.stop_after = None
    resumed = work_as(repo, spec, "atk-first", first_details)  # its own claim: resumed
    resumed.run(first_ctx)
    finished = resumed.finish(first_ctx)
    assert states(target, name) == {"app": "running", "side": "running"}
    recorded = json.dumps([first_details, first_ctx.summaries, first_ctx.checkpoints, first_ctx.warnings, finished])
    assert "ahoy" not in recorded, "the snapshot's .env value (GREETING=ahoy) is in no summary, cursor or warning"
    assert oct((tmp_path / "target" / name / ".env").stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "target" / ".davit" / f"{name}.run").is_symlink(), "the claim is released at finalize"


def test_a_rollback_releases_the_claim_and_a_failed_preflight_leaves_none(
    backed_up: tuple[BuiltStack, Repository, str],  # noqa: F811
    ssh_peer: SshPeer,
    target: docker.DockerClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    claim = tmp_path / "target" / ".davit" / f"{name}.run"
    unmapped = restore_job(ssh_peer, snapshot, name, tmp_path / "target", {})
    ctx = StopAfter("atk-unmapped")
    work = work_as(repo, unmapped, "atk-unmapped")
    work.details = work.prepare(ctx)
    with pytest.raises(PreflightFailed, match="outside the project directory"):
        work.run(ctx)
    assert not claim.is_symlink(), "a failed pre-flight frees the name"
    assert not (tmp_path / "target").exists(), "and leaves no directory the claim made"

    spec = restore_job(ssh_peer, snapshot, name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")})
    ctx = StopAfter("atk-rolled", PREFLIGHT)
    work = work_as(repo, spec, "atk-rolled")
    work.details = work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert claim.is_symlink()
    work.rollback(ctx)
    assert ROLLBACK_TARGET in ctx.done and not claim.is_symlink()


def test_a_snapshot_image_naming_a_tag_the_target_holds_for_another_image_is_refused_and_the_tag_stays(
    backed_up: tuple[BuiltStack, Repository, str],  # noqa: F811
    ssh_peer: SshPeer,
    target: docker.DockerClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    """The manifest's `refs` of an image are as hostile as the export's own `RepoTags` (which
    are refused): before the fix a snapshot naming one of the target's tags moved it to the
    snapshot's image, so every other stack of the target running that name ran the snapshot's."""
    built, repo, snapshot = backed_up
    victim = f"{name}-victim:1"
    own = target.images.get(ssh_peer.image)
    own.tag(victim)

    def claim_victim(source: dict[str, Any]) -> None:
        for image in source["images"]:
            if image["id"] == built.image_id:
                image["refs"] = [*image["refs"], victim]

    try:
        crafted = republish(repo, snapshot, f"crafted-ref-{name}", edit_source=claim_victim)
        spec = restore_job(ssh_peer, crafted, name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")})
        ctx = StopAfter("atk-ref")
        work = work_as(repo, spec, "atk-ref")
        work.details = work.prepare(ctx)
        with pytest.raises(PreflightFailed, match=f"{victim}.*{own.id}"):
            work.run(ctx)
        assert PREFLIGHT not in ctx.done and not work.needs_rollback(ctx)
        assert target.images.get(victim).id == own.id, "the target's tag still names its own image"
        assert states(target, name) == {}
    finally:
        target.images.remove(victim)


def _mount_host_root(repo: Repository) -> Any:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for line in lines:
            if line["p"] == "definition/compose.yaml":
                text = b"".join(repo.read_chunk(bytes.fromhex(c)) for c in line["c"]).decode()
                old = 'volumes: ["appdata:/shared:ro"]'
                assert old in text
                text = text.replace(old, 'volumes: ["appdata:/shared:ro", "/:/host:ro"]')
                line.update(s=len(text.encode()), c=[store_chunk(repo, text.encode())])
        return lines

    return edit


def test_a_bind_the_snapshot_says_it_did_not_store_is_held_to_outside_binds_fail(
    backed_up: tuple[BuiltStack, Repository, str],  # noqa: F811
    ssh_peer: SshPeer,
    target: docker.DockerClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    """A compose file mounting `/` of the target, with the manifest saying the backup skipped
    that bind (as it says of a socket): before the fix the restore planned it as "kept, unchecked"
    and started the stack with the target's `/` mounted, although `outside_binds` was "fail",
    the default that makes any bind outside the project directory fail pre-flight."""
    built, repo, snapshot = backed_up

    def skipped_root(source: dict[str, Any]) -> None:
        source["skipped_binds"] = [{"source": "/", "reason": "a socket"}]

    crafted = republish(repo, snapshot, f"crafted-root-{name}", edit_source=skipped_root, edit_lines=_mount_host_root(repo))
    spec = restore_job(ssh_peer, crafted, name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")})
    ctx = StopAfter("atk-root")
    work = work_as(repo, spec, "atk-root")
    work.details = work.prepare(ctx)
    with pytest.raises(PreflightFailed, match=r"bind-mount /, outside the project directory .* the target.s own /"):
        work.run(ctx)
    assert PREFLIGHT not in ctx.done and states(target, name) == {}
    # the operator who means it says so: the target's own `/` is mounted, nothing written there
    kept = restore_job(
        ssh_peer,
        crafted,
        name,
        tmp_path / "target",
        {str(built.uploads): str(tmp_path / "mapped" / "u")},
        outside_binds="keep-path",
    )
    ctx = StopAfter("atk-root-kept", PREFLIGHT)
    work = work_as(repo, kept, "atk-root-kept")
    work.details = work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert PREFLIGHT in ctx.done
    work.rollback(ctx)


def test_a_rolled_back_restore_leaves_an_image_the_target_already_had_under_the_same_id(
    backed_up: tuple[BuiltStack, Repository, str],  # noqa: F811
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    target: docker.DockerClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    """The snapshot's image ID collides with one the target holds (its own, under its own tag):
    nothing is loaded, the project's name is added, and the rollback takes back only that name."""
    built, repo, snapshot = backed_up
    source = docker.DockerClient(base_url=docker_peer.host)
    try:
        target.images.load(b"".join(source.api.get_image(built.image_id)))
    finally:
        source.close()
    own = f"{name}-own:1"
    target.images.get(built.image_id).tag(own)
    spec = restore_job(
        ssh_peer, snapshot, name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")}, verify_timeout=1
    )
    ctx = StopAfter("atk-collide")
    work = work_as(repo, spec, "atk-collide")
    work.details = work.prepare(ctx)
    with pytest.raises(TargetNotHealthy):
        work.run(ctx)
    assert ctx.summaries[PREFLIGHT]["images_to_send"] == [], "the target holds the ID: nothing loaded"
    work.rollback(ctx)
    assert ctx.summaries[ROLLBACK_TARGET]["images"] == [f"untagged {name}-app"]
    assert target.images.get(own).id == built.image_id, "the target's own image and name stay"
    assert states(target, name) == {}


def test_a_compose_file_mounting_a_path_the_manifest_does_not_name_is_refused_before_up(
    backed_up: tuple[BuiltStack, Repository, str],  # noqa: F811
    ssh_peer: SshPeer,
    target: docker.DockerClient,  # noqa: F811
    name: str,
    tmp_path: Path,
) -> None:
    """The compose file mounts the target's `/`, the manifest names no such bind: the written
    project's resolved model is held against the plan before `up` (attack not reproduced)."""
    built, repo, snapshot = backed_up
    crafted = republish(repo, snapshot, f"crafted-unnamed-{name}", edit_lines=_mount_host_root(repo))
    spec = restore_job(ssh_peer, crafted, name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")})
    ctx = StopAfter("atk-unnamed")
    work = work_as(repo, spec, "atk-unnamed")
    work.details = work.prepare(ctx)
    with pytest.raises(BindsMisplaced, match="service side on the target bind-mounts /, not where"):
        work.run(ctx)
    assert START not in ctx.done and states(target, name) == {}, "nothing started with the target's / mounted"
    work.rollback(ctx)
    assert not (tmp_path / "target" / name).exists()

"""compose.restore against the real peers, driven without a daemon: a stack with a `build:` image
that exists only on the source engine, a named volume and a bind outside its project directory,
backed up with `compose.backup` (images = true), restored onto the ssh peer's engine under
another project name with `path_map`; a run stopped in the middle of its transfer and resumed
sends only what the target's store lacks; a failing verify rolls back everything the restore
created; a project name already taken is refused at prepare; and crafted snapshots (a volume
key `../x`, definition files named `..`/absolute, a symlink in bind data with an entry under
it, an image export that is another image) are refused before anything reaches the target."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.compose.backup import ComposeBackupWork
from davit.adapters.compose.migrate import EXPORT, PREFLIGHT, ROLLBACK_TARGET, TRANSFER, VERIFY
from davit.adapters.compose.restore import ComposeRestoreWork, ProjectExists
from davit.adapters.compose.target import TargetNotHealthy
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import CorruptSnapshot, RunStopped, UnsafeName
from davit.domain.jobs import ComposeBackupJob, ComposeRestoreJob
from tests.fakes import MemoryRunContext
from tests.integration.check.helpers import check, job_file, make_home
from tests.integration.compose.restore_stack import (
    BuiltStack,
    make_built_stack,
    remove_image,
    remove_paths,
    remove_project,
    restore_job,
)
from tests.integration.compose.stack import digest
from tests.integration.crafted_trees import store_chunk
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]

SMALL = Tuning(chunk_size=64 << 10, pack_size=1 << 20, checkpoint_seconds=60, inflight_chunks=4)


class SummaryContext(MemoryRunContext):
    def __init__(self, stop_at_transfer: bool = False) -> None:
        super().__init__(run_id="restore1")
        self.summaries: dict[str, dict[str, Any]] = {}
        self.stop_at_transfer = stop_at_transfer

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        self.summaries[step] = summary
        super().step_completed(step, summary)

    def checkpoint(self, step: str, cursor: dict[str, Any], **kw: Any) -> None:
        super().checkpoint(step, cursor, **kw)
        if step == TRANSFER and self.stop_at_transfer:
            self.stop.set()


@pytest.fixture(scope="module")
def backed_up(
    docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BuiltStack, Repository, str]]:
    """The stack, backed up with its image, then removed from the source engine with its volume."""
    root = tmp_path_factory.mktemp("restore")
    source = docker.DockerClient(base_url=docker_peer.host)
    built = make_built_stack(root, source, docker_peer, ssh_peer.docker_host, data_mib=12)
    try:
        repo = Repository.open(root / "repo")
        spec = ComposeBackupJob(
            name="stack", kind="compose.backup", engine=docker_peer.host, source={"project": built.stack.name}, images=True
        )  # type: ignore[arg-type]
        ctx = MemoryRunContext(run_id="backup1")
        work = ComposeBackupWork(RunInputs(spec, "backup1", SMALL, repo=repo))
        work.details = work.prepare(ctx)
        work.run(ctx)
        work.finish(ctx)
        yield built, repo, repo.resolve("latest", "stack").id
    finally:
        remove_project(docker_peer.host, built.stack.name)
        remove_image(docker_peer.host, built.image_id)
        source.close()


@pytest.fixture
def target(ssh_peer: SshPeer) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=ssh_peer.docker_host)
    yield client
    client.close()


@pytest.fixture
def restored_name(backed_up: tuple[BuiltStack, Repository, str], ssh_peer: SshPeer, tmp_path: Path) -> Iterator[str]:
    """A project name for this test's restore; everything of it removed from the target after."""
    built = backed_up[0]
    name = f"{built.stack.name}r{tmp_path.name[-6:].lower().replace('_', '')}"
    name = "".join(ch for ch in name if ch.isalnum())
    yield name
    remove_project(ssh_peer.docker_host, name)
    remove_image(ssh_peer.docker_host, built.image_id)
    remove_paths(tmp_path / "target", tmp_path / "mapped")


def work_for(repo: Repository, spec: ComposeRestoreJob, details: dict[str, Any] | None = None) -> ComposeRestoreWork:
    return ComposeRestoreWork(RunInputs(spec, "restore1", SMALL, details, repo=repo))


def states(client: docker.DockerClient, project: str) -> dict[str, str]:
    found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return {c.labels["com.docker.compose.service"]: c.status for c in found}


def volume_dir(client: docker.DockerClient, name: str) -> Path:
    return Path(client.volumes.get(name).attrs["Mountpoint"])


def test_a_stack_restored_under_another_name_runs_with_identical_data_and_the_same_image_id(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    mapped = tmp_path / "mapped" / "uploads"
    spec = restore_job(ssh_peer, snapshot, restored_name, tmp_path / "target", {str(built.uploads): str(mapped)})
    ctx = SummaryContext()
    work = work_for(repo, spec)
    details = work.prepare(ctx)
    work.run(ctx)
    summary = work.finish(ctx)

    assert summary["project"] == restored_name and details["snapshot_project"] == built.stack.name
    assert states(target, restored_name) == {"app": "running", "side": "running"}
    assert ctx.summaries[VERIFY]["services"] == {"app": "running/healthy", "side": "running"}
    assert target.images.get(f"{restored_name}-app").id == built.image_id, "the built image, by the name compose gives it"
    project_dir = tmp_path / "target" / restored_name
    assert digest(project_dir / "site") == digest(built.stack.dir / "site")
    assert digest(mapped) == digest(built.uploads), "the outside bind, mapped, byte for byte (its symlink a link)"
    assert (mapped / "escape").is_symlink() and [p.name for p in built.outside.iterdir()] == ["keep.txt"]
    assert (
        str(mapped) in (project_dir / "compose.yaml").read_text()
        and str(built.uploads) not in (project_dir / "compose.yaml").read_text()
    )
    assert (project_dir / ".env").read_text() == "GREETING=ahoy\n"
    restored_volume = digest(volume_dir(target, f"{restored_name}_appdata"))
    assert restored_volume["db/blob"][0] == "f" and set(restored_volume) == {"db", "db/blob", "db/t.txt"}
    assert not (tmp_path / "target" / ".davit" / restored_name).exists(), "the chunk store is removed at finalize"
    sent = ctx.summaries[TRANSFER]
    assert sent["chunks_sent"] == sent["chunks"] > 3


def test_a_restore_stopped_mid_transfer_resumes_sending_only_what_the_store_lacks(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    spec = restore_job(
        ssh_peer, snapshot, restored_name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")}
    )
    ctx = SummaryContext(stop_at_transfer=True)
    details = work_for(repo, spec).prepare(ctx)
    with pytest.raises(RunStopped):
        work_for(repo, spec, details).run(ctx)
    first = ctx.cursors[TRANSFER]["chunks_sent"]
    assert first > 0 and TRANSFER not in ctx.done
    ctx.stop.clear()
    ctx.stop_at_transfer = False
    resumed = work_for(repo, spec, details)  # a new process's work: only the recorded details
    resumed.run(ctx)
    resumed.finish(ctx)
    sent = ctx.summaries[TRANSFER]
    assert sent["already_on_target"] >= first and sent["chunks_sent"] == sent["chunks"] - sent["already_on_target"]
    assert states(target, restored_name) == {"app": "running", "side": "running"}
    assert target.images.get(f"{restored_name}-app").id == built.image_id


def test_a_restore_sends_only_the_image_layers_the_target_lacks(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    """The built image is the peers' base image (on the target) and one layer (`COPY blob`, 1 MiB):
    before layers were left out the restore sent the whole export, base layers and all."""
    built, repo, snapshot = backed_up
    spec = restore_job(
        ssh_peer, snapshot, restored_name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")}
    )
    base = target.images.get(ssh_peer.image)
    base_layers = base.attrs["RootFS"]["Layers"]
    ctx = SummaryContext()
    work = work_for(repo, spec)
    details = work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)

    (image,) = [i for i in details["restore"]["snapshot_images"] if i["id"] == built.image_id]
    whole, sent = image["bytes"], ctx.cursors[EXPORT]["done"]["image-0"]["bytes"]
    assert whole > (2 << 20), "the base layers make up most of the export (else this test shows nothing)"
    assert (1 << 20) < sent < (1 << 20) + (256 << 10), f"only the blob's layer and the metadata: {sent} of {whole} bytes"
    (listed,) = ctx.summaries[PREFLIGHT]["images_to_send"]  # the base image (`side`) is there: not sent
    assert listed["id"] == built.image_id
    assert listed["layers"] == len(base_layers) + 1 and listed["layers_on_target"] == len(base_layers)
    assert target.images.get(f"{restored_name}-app").id == built.image_id, "the target's load gave the source's image ID"
    assert states(target, restored_name) == {"app": "running", "side": "running"}


def test_a_failing_verify_rolls_back_the_project_its_volumes_binds_and_the_image_it_loaded(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    mapped = tmp_path / "mapped" / "uploads"
    # the healthcheck's first run is 3 s after start: a 1 s verify cannot see it healthy
    spec = restore_job(
        ssh_peer, snapshot, restored_name, tmp_path / "target", {str(built.uploads): str(mapped)}, verify_timeout=1
    )
    ctx = SummaryContext()
    work = work_for(repo, spec)
    work.prepare(ctx)
    with pytest.raises(TargetNotHealthy):
        work.run(ctx)
    assert states(target, restored_name), "the failed project was started before the rollback"
    assert work.needs_rollback(ctx)
    work.rollback(ctx)
    undone = [f"untagged {restored_name}-app", f"removed {built.image_id}"]
    assert ROLLBACK_TARGET in ctx.done and ctx.summaries[ROLLBACK_TARGET]["images"] == undone
    assert states(target, restored_name) == {}
    assert not target.volumes.list(filters={"label": f"com.docker.compose.project={restored_name}"})
    assert not (tmp_path / "target" / restored_name).exists() and not mapped.exists()
    assert not (tmp_path / "target" / ".davit" / restored_name).exists()
    with pytest.raises(docker.errors.ImageNotFound):
        target.images.get(built.image_id)
    assert ssh_peer.image in [t for i in target.images.list() for t in i.tags], "the target's own images stay"


def test_a_project_name_taken_on_the_target_is_refused_at_prepare(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    _built, repo, snapshot = backed_up
    target.volumes.create(f"{restored_name}_appdata", labels={"com.docker.compose.project": restored_name})
    spec = restore_job(ssh_peer, snapshot, restored_name, tmp_path / "target", {}, outside_binds="skip")
    ctx = SummaryContext()
    work = work_for(repo, spec)
    with pytest.raises(ProjectExists, match=f"volumes {restored_name}_appdata"):
        work.prepare(ctx)
    assert target.volumes.get(f"{restored_name}_appdata"), "nothing of what was there is touched"


def test_an_unmapped_outside_bind_fails_preflight_before_anything_is_created(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    spec = restore_job(ssh_peer, snapshot, restored_name, tmp_path / "target", {})
    ctx = SummaryContext()
    work = work_for(repo, spec)
    work.prepare(ctx)
    with pytest.raises(Exception, match=f"bind-mounts {built.uploads}, outside the project directory"):
        work.run(ctx)
    assert PREFLIGHT not in ctx.done and not work.needs_rollback(ctx)
    assert states(target, restored_name) == {} and not (tmp_path / "target" / restored_name).exists()


def unhealthy(repo: Repository, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for line in lines:
        if line["p"] == "definition/compose.yaml":
            text = b"".join(repo.read_chunk(bytes.fromhex(c)) for c in line["c"]).decode()
            health = '    healthcheck: {test: ["CMD", "false"], interval: 1s, retries: 1}\n'
            text = text.replace('    volumes: ["appdata:/shared:ro"]\n', '    volumes: ["appdata:/shared:ro"]\n' + health)
            assert health in text
            line.update(s=len(text.encode()), c=[store_chunk(repo, text.encode())])
    return lines


# --- crafted snapshots -----------------------------------------------------------------------------


def republish(repo: Repository, snapshot: str, new_id: str, edit_source: Any = None, edit_lines: Any = None) -> str:
    """The snapshot's manifest and tree, edited, published again as `new_id` (as anyone who can
    write a plain repository could)."""
    info = repo.resolve(snapshot)
    lines = [json.loads(line) for line in repo.open_tree(info) if line.strip()]
    source = json.loads(json.dumps(info.source))
    if edit_source is not None:
        edit_source(source)
    if edit_lines is not None:
        lines = edit_lines(lines)
    raw = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    manifest = {
        "id": new_id,
        "job": "crafted",
        "kind": "compose",
        "run_id": new_id,
        "created_at": "2026-01-01T00:00:00",
        "source": source,
    }
    repo.publish_snapshot_from(manifest, io.BytesIO(raw))
    return new_id


def _volume_key_climbs(source: dict[str, Any]) -> None:
    source["volumes"][0].update(key="../x", path="volumes/../x")


def _definition_climbs(source: dict[str, Any]) -> None:
    source["definition"]["files"].append("../../evil.yaml")


def _definition_absolute(source: dict[str, Any]) -> None:
    source["definition"]["files"].append("/etc/evil.yaml")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_volume_key_climbs, "a volume key compose would not accept"),
        (_definition_climbs, r"not normalised|'\.\.'"),
        (_definition_absolute, "an absolute name"),
    ],
    ids=["volume-key-climbs", "definition-name-climbs", "definition-name-absolute"],
)
def test_a_crafted_manifest_name_is_refused_at_prepare(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
    edit: Any,
    match: str,
) -> None:
    _built, repo, snapshot = backed_up
    crafted = republish(repo, snapshot, f"crafted-{edit.__name__.strip('_')}-{restored_name}", edit_source=edit)
    spec = restore_job(ssh_peer, crafted, restored_name, tmp_path / "target", {}, outside_binds="skip")
    with pytest.raises(UnsafeName, match=match):
        work_for(repo, spec).prepare(SummaryContext())
    assert states(target, restored_name) == {} and not (tmp_path / "target").exists()


def test_an_entry_under_a_symlink_in_bind_data_is_refused_at_prepare_and_nothing_is_written_through_it(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    n = next(b["path"] for b in repo.resolve(snapshot).source["binds"] if b["source"] == str(built.uploads))

    def plant(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pwned = {"p": f"{n}/escape/pwned", "t": "f", "m": 0o644, "mt": 1_600_000_000_000_000_000, "s": 0, "c": []}
        at = next(i for i, line in enumerate(lines) if line["p"] == f"{n}/escape") + 1
        return [*lines[:at], pwned, *lines[at:]]

    crafted = republish(repo, snapshot, f"crafted-under-link-{restored_name}", edit_lines=plant)
    spec = restore_job(
        ssh_peer, crafted, restored_name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")}
    )
    with pytest.raises(CorruptSnapshot, match="escape/pwned"):
        work_for(repo, spec).prepare(SummaryContext())
    assert [p.name for p in built.outside.iterdir()] == ["keep.txt"]
    assert states(target, restored_name) == {}


def test_an_image_export_holding_another_image_is_refused_before_the_engine_loads_it(
    backed_up: tuple[BuiltStack, Repository, str],
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, snapshot = backed_up
    info = repo.resolve(snapshot)
    [image] = [i for i in info.source["images"] if i["id"] == built.image_id]
    # the export of another image (the peers' base image), filed under the built image's name
    source = docker.DockerClient(base_url=docker_peer.host)
    try:
        other = b"".join(source.api.get_image(source.images.get(docker_peer.image).id))
    finally:
        source.close()

    def swap(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for line in lines:
            if line["p"] == image["path"]:
                line.update(s=len(other), c=[store_chunk(repo, other)])
        return lines

    crafted = republish(repo, snapshot, f"crafted-image-{restored_name}", edit_lines=swap)
    spec = restore_job(
        ssh_peer, crafted, restored_name, tmp_path / "target", {str(built.uploads): str(tmp_path / "mapped" / "u")}
    )
    ctx = SummaryContext()
    work = work_for(repo, spec)
    work.prepare(ctx)
    with pytest.raises(CorruptSnapshot, match=f"its name says {image['id']}"):
        work.run(ctx)
    assert PREFLIGHT not in ctx.done and not work.needs_rollback(ctx)
    with pytest.raises(docker.errors.ImageNotFound):
        target.images.get(built.image_id)
    assert states(target, restored_name) == {}


def test_davit_check_of_a_restore_finds_the_snapshot_and_the_target_and_fails_on_a_taken_name(
    backed_up: tuple[BuiltStack, Repository, str],
    ssh_peer: SshPeer,
    target: docker.DockerClient,
    restored_name: str,
    tmp_path: Path,
) -> None:
    built, repo, _snapshot = backed_up
    home = make_home(tmp_path / "home", {"local": f'path = "{repo.root}"'})
    body = (
        f'kind = "compose.restore"\nproject = "{restored_name}"\n[source]\njob = "stack"\n'
        f'[path_map]\n"{built.uploads}" = "{tmp_path / "mapped" / "u"}"\n'
        f'[target]\nhost = "{ssh_peer.host}"\nport = {ssh_peer.port}\nuser = "{ssh_peer.user}"\n'
        f'key_file = "{ssh_peer.key_file}"\nknown_hosts = "{ssh_peer.known_hosts}"\n'
        f'base_path = "{tmp_path / "target"}"\nhelper_image = "{ssh_peer.image}"\n'
    )
    job = job_file(tmp_path / "jobs", "back", body)
    out = check(home, job)
    assert out.exit_code == 0, out.lines
    assert out.verdict("target", "project") == "ok" and out.verdict("target", "tools") == "ok"
    target.volumes.create(f"{restored_name}_appdata", labels={"com.docker.compose.project": restored_name})
    taken = check(home, job)
    assert taken.exit_code == 1 and taken.failed() == [("target", "project")]
    assert states(target, restored_name) == {} and not (tmp_path / "target").exists(), "a check creates nothing"


def test_a_restore_onto_this_hosts_engine_runs_under_another_name_beside_the_source(
    backed_up: tuple[BuiltStack, Repository, str], docker_peer: DockerPeer, restored_name: str, tmp_path: Path
) -> None:
    """No `[target] host`: the same steps through local processes (`localhost.py`), onto the
    engine the stack was backed up from, beside the running source; its image is there by ID
    already, so it is only tagged with the new project's name, never loaded."""
    built, repo, snapshot = backed_up
    mapped = tmp_path / "mapped" / "uploads"
    spec = ComposeRestoreJob.model_validate(
        {
            "name": "restore",
            "kind": "compose.restore",
            "verify_timeout": 60,
            "project": restored_name,
            "source": {"snapshot": snapshot},
            "path_map": {str(built.uploads): str(mapped)},
            "target": {"engine": docker_peer.host, "base_path": str(tmp_path / "target"), "helper_image": docker_peer.image},
        }
    )
    local = docker.DockerClient(base_url=docker_peer.host)
    try:
        ctx = SummaryContext()
        work = work_for(repo, spec)
        details = work.prepare(ctx)
        assert details["target"] == f"this host ({docker_peer.host})"
        work.run(ctx)
        work.finish(ctx)
        assert states(local, restored_name) == {"app": "running", "side": "running"}
        assert states(local, built.stack.name) == {"app": "running", "side": "running"}, "the source is left alone"
        assert local.images.get(f"{restored_name}-app").id == built.image_id
        assert ctx.summaries[PREFLIGHT]["images_to_send"] == [], "the engine has the image: nothing loaded"
        assert digest(mapped) == digest(built.uploads)
        assert digest(volume_dir(local, f"{restored_name}_appdata")) == digest(volume_dir(local, f"{built.stack.name}_appdata"))
        assert digest(tmp_path / "target" / restored_name / "site") == digest(built.stack.dir / "site")
    finally:
        remove_project(docker_peer.host, restored_name)
        try:
            local.images.remove(f"{restored_name}-app")  # the name only: the image is the source's
        except docker.errors.ImageNotFound:
            pass
        local.close()

"""compose.restore through davitd, as an operator runs it (issue 21's test): a stack with a
`build:` image that exists only on the source engine and a bind mount outside its project
directory, backed up with `compose.backup` (images = true); the source project, its volume and
its image removed from the source engine; restored with `compose.restore` onto the ssh peer's
engine under another project name with `path_map`: its containers run, the volume and bind data
are identical, the image ID is equal. A `kill -9` in the middle of the restore's transfer
resumes sending only what the target's store lacks; a failing verify rolls the restore back,
removing the target project and the image it loaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.integration.compose.restore_stack import BuiltStack, make_built_stack, remove_image, remove_paths, remove_project
from tests.integration.compose.stack import digest
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]


@pytest.fixture
def built(
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[BuiltStack]:
    flagged = "verify_fails" in request.node.name
    made = make_built_stack(tmp_path, engines[0], docker_peer, ssh_peer.docker_host, data_mib=2, flagged=flagged)
    yield made
    restored = f"{made.stack.name}x"
    remove_project(docker_peer.host, made.stack.name)
    remove_project(ssh_peer.docker_host, restored)
    for host in (docker_peer.host, ssh_peer.docker_host):
        remove_image(host, made.image_id)
    remove_paths(tmp_path / "target", tmp_path / "mapped")


def backup(davit: Davit, docker_peer: DockerPeer, built: BuiltStack) -> str:
    write_job(
        davit,
        "shop.toml",
        f'name = "shop"\nkind = "compose.backup"\nengine = "{docker_peer.host}"\nstop_timeout = 1\nimages = true\n'
        f'[source]\nproject = "{built.stack.name}"\n',
    )
    run = davit.wait_run_state("shop", {"succeeded", "failed"}, timeout=180)
    assert run["state"] == "succeeded", run
    return str(run["run_id"])


def restore_text(ssh_peer: SshPeer, built: BuiltStack, tmp_path: Path, extra: str = "") -> str:
    return f"""name = "back"
kind = "compose.restore"
project = "{built.stack.name}x"
verify_timeout = 60
{extra}
[source]
job = "shop"
snapshot = "latest"
[path_map]
"{built.uploads}" = "{tmp_path / "mapped" / "uploads"}"
[target]
host = "{ssh_peer.host}"
port = {ssh_peer.port}
user = "{ssh_peer.user}"
key_file = "{ssh_peer.key_file}"
known_hosts = "{ssh_peer.known_hosts}"
base_path = "{tmp_path / "target"}"
helper_image = "{ssh_peer.image}"
"""


def states(client: docker.DockerClient, project: str) -> dict[str, str]:
    found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return {c.labels["com.docker.compose.service"]: c.status for c in found}


def image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def test_a_stack_backed_up_wiped_and_restored_on_another_engine_under_another_name_runs_with_identical_data(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    built: BuiltStack,
    tmp_path: Path,
) -> None:
    source, target = engines
    name, restored = built.stack.name, f"{built.stack.name}x"
    volume_before = digest(Path(source.volumes.get(f"{name}_appdata").attrs["Mountpoint"]))
    uploads_before, site_before = digest(built.uploads), digest(built.stack.dir / "site")
    davit.start()
    snapshot = backup(davit, docker_peer, built)
    # the source engine wiped of the project: containers, network, volume, and its built image
    remove_project(docker_peer.host, name)
    remove_image(docker_peer.host, built.image_id)
    assert image_id(source, built.image_id) is None and not source.volumes.list(filters={"name": name})
    assert image_id(target, built.image_id) is None

    write_job(davit, "back.toml", restore_text(ssh_peer, built, tmp_path))
    run = davit.wait_run_state("back", {"succeeded", "failed", "rolled_back"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["steps"]["inspect"]["summary"]["snapshot_id"] == snapshot
    assert states(target, restored) == {"app": "running", "side": "running"}
    assert image_id(target, f"{restored}-app") == built.image_id
    assert digest(Path(target.volumes.get(f"{restored}_appdata").attrs["Mountpoint"])) == volume_before
    assert digest(tmp_path / "mapped" / "uploads") == uploads_before
    assert digest(tmp_path / "target" / restored / "site") == site_before
    assert [p.name for p in built.outside.iterdir()] == ["keep.txt"], "nothing written through the symlink in the data"


def test_a_restore_whose_verify_fails_is_rolled_back_removing_the_project_and_the_image_it_loaded(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    built: BuiltStack,
    tmp_path: Path,
) -> None:
    _source, target = engines
    restored = f"{built.stack.name}x"
    davit.start()
    backup(davit, docker_peer, built)
    # `side` is healthy only in the source's container (a flag file no backup holds): verify fails
    write_job(davit, "back.toml", restore_text(ssh_peer, built, tmp_path))
    run = davit.wait_run_state("back", {"succeeded", "failed", "rolled_back"}, timeout=300)
    assert run["state"] == "rolled_back", run
    assert run["steps"]["start_target"]["status"] == "done" and run["steps"]["verify"]["status"] != "done"
    undone = run["steps"]["rollback_target"]["summary"]
    assert undone["removed"] and undone["images"] == [f"untagged {restored}-app", f"removed {built.image_id}"]
    assert states(target, restored) == {}
    assert not target.volumes.list(filters={"label": f"com.docker.compose.project={restored}"})
    assert not (tmp_path / "target" / restored).exists() and not (tmp_path / "mapped" / "uploads").exists()
    assert image_id(target, built.image_id) is None and image_id(target, ssh_peer.image) is not None


@pytest.mark.slow
def test_a_restore_killed_during_its_transfer_resumes_sending_only_what_the_store_lacks(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    built: BuiltStack,
    tmp_path: Path,
) -> None:
    _source, target = engines
    restored = f"{built.stack.name}x"
    fill = "dd if=/dev/urandom of=/data/big bs=1048576 count=48 2>/dev/null"
    built.stack.compose("exec", "-T", "app", "sh", "-c", fill)
    davit.start()
    backup(davit, docker_peer, built)
    write_job(davit, "back.toml", restore_text(ssh_peer, built, tmp_path))

    def transfer_checkpoints() -> list[dict[str, Any]]:
        return [e[3] for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "transfer"]

    davit.wait_for(lambda: bool(transfer_checkpoints()), 300, "a transfer checkpoint", poll=0.005)
    davit.kill9()
    confirmed = max(int(c["cursor"]["bytes_sent"]) for c in transfer_checkpoints())
    at_kill = davit.runs("back")[-1]
    assert at_kill["state"] == "running" and at_kill["steps"]["transfer"]["status"] != "done"

    davit.start()
    run = davit.wait_run_state("back", {"succeeded", "failed", "rolled_back"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["interruptions"] == 1
    transfer = run["steps"]["transfer"]["summary"]
    assert transfer["already_on_target"] >= 1
    assert transfer["bytes_sent"] == transfer["bytes_missing"]
    assert transfer["bytes_missing"] <= transfer["bytes_needed"] - confirmed
    assert states(target, restored) == {"app": "running", "side": "running"}
    assert image_id(target, f"{restored}-app") == built.image_id

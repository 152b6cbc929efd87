"""volume.backup and volume.restore against the real Docker engine peer, driven without a daemon."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.docker.backup import START, STOP, STORE, VolumeBackupWork
from davit.adapters.docker.restore import VolumeRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError, TargetNotEmpty
from davit.domain.jobs import VolumeBackupJob, VolumeRestoreJob
from tests.fakes import MemoryRunContext
from tests.peers.state import DockerPeer

SMALL = Tuning(chunk_size=64 << 10, pack_size=256 << 10, checkpoint_seconds=60, inflight_chunks=4)
FILL = (
    "mkdir -p /v/sub/deep && echo hello > /v/greeting && "
    "dd if=/dev/urandom of=/v/sub/random.bin bs=1024 count=700 2>/dev/null && "
    "dd if=/dev/zero of=/v/sub/deep/zeros.bin bs=1024 count=300 2>/dev/null && "
    "ln -s greeting /v/link && chmod 0640 /v/greeting && chown 123:456 /v/sub/random.bin"
)


@pytest.fixture
def engine(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_peer.host)
    yield client
    client.close()


@pytest.fixture
def names(engine: docker.DockerClient) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    made = {
        "data": f"davit-vol-{tag}",
        "other": f"davit-other-{tag}",
        "restored": f"davit-restored-{tag}",
        "app": f"davit-app-{tag}",
        "tag": tag,
    }
    yield made
    for c in engine.containers.list(all=True, filters={"label": f"davit-test={tag}"}):
        c.remove(force=True)
    for key in ("data", "other", "restored"):
        for v in engine.volumes.list(filters={"name": made[key]}):
            v.remove(force=True)


def run_in(engine: docker.DockerClient, image: str, volume: str, script: str) -> None:
    container = engine.containers.create(image, ["sh", "-c", script], volumes={volume: {"bind": "/v", "mode": "rw"}})
    try:
        container.start()
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs()
    finally:
        container.remove(force=True)


def app_container(engine: docker.DockerClient, image: str, names: dict[str, str], label: str = "true") -> Any:
    return engine.containers.run(
        image,
        ["sleep", "600"],
        detach=True,
        name=names["app"],
        labels={"davit.stop-during-backup": label, "davit-test": names["tag"]},
        volumes={names["data"]: {"bind": "/v", "mode": "rw"}},
    )


def digest(path: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(path))
        if p.is_symlink():
            out[rel] = ("l", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("d", st.st_mode & 0o7777, st.st_uid, st.st_gid)
        else:
            out[rel] = (
                "f",
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def mountpoint(engine: docker.DockerClient, name: str) -> Path:
    return Path(engine.volumes.get(name).attrs["Mountpoint"])


def backup_spec(docker_peer: DockerPeer, names: dict[str, str]) -> VolumeBackupJob:
    return VolumeBackupJob(
        name="vols",
        kind="volume.backup",
        engine=docker_peer.host,
        source={"names": [names["data"], names["other"]]},
        stop_timeout=1,
    )  # type: ignore[arg-type]


def restore_spec(docker_peer: DockerPeer, names: dict[str, str], overwrite: bool = False) -> VolumeRestoreJob:
    return VolumeRestoreJob(
        name="vols-back",
        kind="volume.restore",
        engine=docker_peer.host,
        source={"job": "vols"},
        volume=names["data"],  # type: ignore[arg-type]
        target={"volume": names["restored"], "overwrite": overwrite},
    )  # type: ignore[arg-type]


def run_work(work: Any, ctx: MemoryRunContext, details: dict[str, Any] | None = None) -> dict[str, Any]:
    if details is None:
        work.details = work.prepare(ctx)
    work.run(ctx)
    return dict(work.finish(ctx))


class WatchingContext(MemoryRunContext):
    """Notes the app container's status at every store checkpoint; can fail the store."""

    def __init__(self, engine: docker.DockerClient, container: str, fail_store: bool = False) -> None:
        super().__init__()
        self.engine, self.container, self.fail_store = engine, container, fail_store
        self.seen: list[str] = []

    def checkpoint(self, step: str, cursor: dict[str, Any], **kw: Any) -> None:
        if step == STORE:
            self.seen.append(self.engine.containers.get(self.container).status)
            if self.fail_store:
                raise PermanentError("disk on fire (test)")
        super().checkpoint(step, cursor, **kw)


def test_volume_round_trip_restores_identical_data_and_restarts_the_stopped_app(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], tmp_path: Path
) -> None:
    engine.volumes.create(names["data"])
    engine.volumes.create(names["other"])
    run_in(engine, docker_peer.image, names["data"], FILL)
    run_in(engine, docker_peer.image, names["other"], "echo other > /v/o.txt")
    app_container(engine, docker_peer.image, names)
    repo = Repository.open(tmp_path / "repo")
    ctx = WatchingContext(engine, names["app"])
    summary = run_work(VolumeBackupWork(RunInputs(backup_spec(docker_peer, names), "snap1", SMALL, repo=repo)), ctx, None)
    assert summary["files"] == 4 and ctx.seen and set(ctx.seen) == {"exited"}
    assert {STOP, STORE, START} <= ctx.done
    assert engine.containers.get(names["app"]).status == "running"

    rctx = MemoryRunContext(run_id="restore1")
    restore = VolumeRestoreWork(RunInputs(restore_spec(docker_peer, names), "restore1", SMALL, repo=repo))
    run_work(restore, rctx)
    assert digest(mountpoint(engine, names["restored"])) == digest(mountpoint(engine, names["data"]))
    assert not (mountpoint(engine, names["restored"]) / "o.txt").exists()


def test_unchanged_volume_content_is_not_stored_twice(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], tmp_path: Path
) -> None:
    engine.volumes.create(names["data"])
    engine.volumes.create(names["other"])
    run_in(engine, docker_peer.image, names["data"], FILL)
    repo = Repository.open(tmp_path / "repo")
    first = MemoryRunContext(run_id="s1")
    run_work(VolumeBackupWork(RunInputs(backup_spec(docker_peer, names), "s1", SMALL, repo=repo)), first)
    second = MemoryRunContext(run_id="s2")
    run_work(VolumeBackupWork(RunInputs(backup_spec(docker_peer, names), "s2", SMALL, repo=repo)), second)
    assert first.chunks_written and second.chunks_written == []


def test_stopped_app_runs_again_after_a_failed_backup_and_is_stopped_again_on_resume(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], tmp_path: Path
) -> None:
    engine.volumes.create(names["data"])
    engine.volumes.create(names["other"])
    run_in(engine, docker_peer.image, names["data"], FILL)
    app_container(engine, docker_peer.image, names)
    repo = Repository.open(tmp_path / "repo")
    ctx = WatchingContext(engine, names["app"], fail_store=True)
    work = VolumeBackupWork(RunInputs(backup_spec(docker_peer, names), "snap1", SMALL, repo=repo))
    work.details = work.prepare(ctx)
    with pytest.raises(PermanentError, match="disk on fire"):
        work.run(ctx)
    assert ctx.seen == ["exited"]
    assert engine.containers.get(names["app"]).status == "running"
    assert START not in ctx.done and any("started 1 of 1" in w for w in ctx.warnings)

    ctx.fail_store, ctx.seen = False, []  # the operator resumes the run
    resumed = VolumeBackupWork(RunInputs(backup_spec(docker_peer, names), "snap1", SMALL, dict(work.details), repo=repo))
    resumed.run(ctx)
    resumed.finish(ctx)
    assert ctx.seen and set(ctx.seen) == {"exited"}
    assert engine.containers.get(names["app"]).status == "running"


def test_app_of_another_stop_group_keeps_running(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], tmp_path: Path
) -> None:
    engine.volumes.create(names["data"])
    engine.volumes.create(names["other"])
    app_container(engine, docker_peer.image, names, label="nightly")
    repo = Repository.open(tmp_path / "repo")
    ctx = WatchingContext(engine, names["app"])
    spec = backup_spec(docker_peer, names).model_copy(update={"stop_group": "weekly"})
    run_work(VolumeBackupWork(RunInputs(spec, "snap1", SMALL, repo=repo)), ctx)
    assert set(ctx.seen) == {"running"} and ctx.cursors[STOP] == {"containers": []}


def test_restore_refuses_a_volume_with_data_unless_overwrite(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], tmp_path: Path
) -> None:
    engine.volumes.create(names["data"])
    engine.volumes.create(names["other"])
    run_in(engine, docker_peer.image, names["data"], FILL)
    repo = Repository.open(tmp_path / "repo")
    run_work(VolumeBackupWork(RunInputs(backup_spec(docker_peer, names), "snap1", SMALL, repo=repo)), MemoryRunContext())
    engine.volumes.create(names["restored"])
    run_in(engine, docker_peer.image, names["restored"], "echo precious > /v/keep.txt")
    with pytest.raises(TargetNotEmpty, match=names["restored"]):
        VolumeRestoreWork(RunInputs(restore_spec(docker_peer, names), "r1", SMALL, repo=repo)).prepare(MemoryRunContext())
    run_work(
        VolumeRestoreWork(RunInputs(restore_spec(docker_peer, names, overwrite=True), "r2", SMALL, repo=repo)),
        MemoryRunContext(run_id="r2"),
    )
    restored = mountpoint(engine, names["restored"])
    assert (restored / "greeting").read_text() == "hello\n" and (restored / "keep.txt").exists()


def test_volumes_of_a_compose_project_are_selected_by_its_label(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], tmp_path: Path
) -> None:
    project = f"proj{names['tag']}"
    engine.volumes.create(names["data"], labels={"com.docker.compose.project": project})
    engine.volumes.create(names["other"])
    spec = VolumeBackupJob(name="vols", kind="volume.backup", engine=docker_peer.host, source={"compose_project": project})  # type: ignore[arg-type]
    work = VolumeBackupWork(RunInputs(spec, "snap1", SMALL, repo=Repository.open(tmp_path / "repo")))
    details = work.prepare(MemoryRunContext())
    assert [v["name"] for v in details["volumes"]] == [names["data"]]

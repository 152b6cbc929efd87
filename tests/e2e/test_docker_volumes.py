"""volume.backup and volume.restore through davitd: `kill -9` in the middle of a backup that
stopped a labelled container; after the restart the backup completes, the container runs
again, and a restore gives identical data. The same through a helper container (the path for
an engine on another host): the resumed run streams again, writes no chunk twice and leaves
no helper behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest

from davit.adapters.docker.helper import HELPER_LABEL
from davit.daemon.recorder import RunRecorder
from davit.domain import events as ev
from davit.eventstore.logkey import read_log_key
from davit.eventstore.sqlite import SqliteEventStore
from tests.e2e.conftest import Davit, write_job
from tests.integration.docker.test_volume_adapter import digest, mountpoint, run_in
from tests.integration.docker.test_volume_helper import seconds_digest
from tests.peers.state import DockerPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slow]

CONFIG = "[data_path]\npack_size_mib = 8\ncheckpoint_seconds = 0.5\n"


@pytest.fixture
def engine(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_peer.host)
    tag = uuid.uuid4().hex[:8]
    client.davit_tag = tag  # type: ignore[attr-defined]
    yield client
    for c in client.containers.list(all=True, filters={"label": f"davit-test={tag}"}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"name": f"davit-e2e-{tag}"}):
        v.remove(force=True)
    client.close()


def test_backup_killed_while_the_app_is_stopped_resumes_and_starts_the_app_again(
    davit: Davit, docker_peer: DockerPeer, engine: docker.DockerClient
) -> None:
    tag = engine.davit_tag  # type: ignore[attr-defined]
    data, restored, app = f"davit-e2e-{tag}-data", f"davit-e2e-{tag}-restored", f"davit-e2e-app-{tag}"
    engine.volumes.create(data)
    run_in(
        engine,
        docker_peer.image,
        data,
        "for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/v/blob$i bs=1048576 count=10 2>/dev/null; done; "
        "mkdir /v/etc && echo conf > /v/etc/app.conf",
    )
    engine.containers.run(
        docker_peer.image,
        ["sleep", "600"],
        detach=True,
        name=app,
        labels={"davit.stop-during-backup": "true", "davit-test": tag},
        volumes={data: {"bind": "/v", "mode": "rw"}},
    )
    davit.configure(CONFIG)
    davit.start()
    write_job(
        davit,
        "vols.toml",
        f'name = "vols"\nkind = "volume.backup"\nengine = "{docker_peer.host}"\nstop_timeout = 1\n[source]\nnames = ["{data}"]\n',
    )

    def store_checkpoints() -> int:
        return sum(1 for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "store")

    davit.wait_for(lambda: store_checkpoints() >= 2, 120, "two store checkpoints", poll=0.005)
    davit.kill9()
    assert davit.runs("vols")[-1]["state"] == "running"
    assert engine.containers.get(app).status == "exited", "the app is stopped while its volume is read"

    davit.start()
    run = davit.wait_run_state("vols", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["interruptions"] == 1 and run["steps"]["start_containers"]["status"] == "done"
    assert engine.containers.get(app).status == "running"

    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "volume.restore"\nengine = "{docker_peer.host}"\n'
        f'volume = "{data}"\n[source]\njob = "vols"\n[target]\nvolume = "{restored}"\n',
    )
    back = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert back["state"] == "succeeded", back
    assert digest(mountpoint(engine, restored)) == digest(mountpoint(engine, data))
    assert "0 problems" in davit.cli("verify", run["run_id"]).stdout
    # progress: the first backup's store (no parent) scanned the volume for its total, the
    # restore knows the volume's size; both ride on the checkpoints davit show --follow reads
    for run_id, step in ((run["run_id"], "store"), (back["run_id"], "restore")):
        points = [e[3] for e in davit.events(f"stream = 'run-{run_id}'") if e[2] == "CheckpointRecorded" and e[3]["step"] == step]
        assert points and points[-1]["bytes_total"] is not None, (step, points[-1:])
        assert points[-1]["bytes_total"] >= points[-1]["bytes_done"] >= 60 << 20, (step, points[-1])


def test_helper_backup_killed_mid_stream_resumes_writes_no_chunk_twice_and_leaves_no_helper(
    davit: Davit, docker_peer: DockerPeer, engine: docker.DockerClient
) -> None:
    tag = engine.davit_tag  # type: ignore[attr-defined]
    data, restored = f"davit-e2e-{tag}-data", f"davit-e2e-{tag}-restored"
    engine.volumes.create(data)
    run_in(
        engine,
        docker_peer.image,
        data,
        "for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/v/blob$i bs=1048576 count=10 2>/dev/null; done; "
        "mkdir /v/etc && echo conf > /v/etc/app.conf && ln -s etc/app.conf /v/conf",
    )
    davit.configure(CONFIG)
    davit.start()
    access = f'access = "helper"\nhelper_image = "{docker_peer.image}"\n'
    write_job(
        davit,
        "vols.toml",
        f'name = "vols"\nkind = "volume.backup"\nengine = "{docker_peer.host}"\n{access}[source]\nnames = ["{data}"]\n',
    )

    def store_checkpoints() -> list[dict[str, Any]]:
        return [e[3] for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "store"]

    davit.wait_for(lambda: len(store_checkpoints()) >= 2, 120, "two store checkpoints", poll=0.005)
    davit.kill9()
    assert davit.runs("vols")[-1]["state"] == "running", "the kill must land in the middle of the backup"
    run_id = davit.runs("vols")[-1]["run_id"]
    assert helpers_of(engine, run_id), "the killed run's helper is still there"

    davit.start()
    run = davit.wait_run_state("vols", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["interruptions"] == 1
    written = [c for cp in store_checkpoints() for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    assert helpers_of(engine, run_id) == []

    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "volume.restore"\nengine = "{docker_peer.host}"\n'
        f'{access}volume = "{data}"\n[source]\njob = "vols"\n[target]\nvolume = "{restored}"\n',
    )
    back = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert back["state"] == "succeeded", back
    assert seconds_digest(mountpoint(engine, restored)) == seconds_digest(mountpoint(engine, data))
    assert helpers_of(engine, back["run_id"]) == []
    assert "0 problems" in davit.cli("verify", run["run_id"]).stdout


def helpers_of(engine: docker.DockerClient, run_id: str) -> list[str]:
    return [c.name for c in engine.containers.list(all=True, filters={"label": f"{HELPER_LABEL}={run_id}"})]


async def record_cancel(db: Path, run_id: str) -> None:
    """What davitd records first when an operator cancels a run (then it stops the work)."""
    store = await SqliteEventStore(db, key=read_log_key(db.parent.parent / "log.key")).open()
    try:
        await (await RunRecorder.load(store, run_id)).record(ev.RunCancelling(reason="requested by operator"))
    finally:
        await store.close()


def test_a_helper_backup_killed_while_its_cancel_is_honoured_ends_cancelled_and_its_helper_is_removed(
    davit: Davit, docker_peer: DockerPeer, engine: docker.DockerClient
) -> None:
    tag = engine.davit_tag  # type: ignore[attr-defined]
    data = f"davit-e2e-{tag}-data"
    engine.volumes.create(data)
    run_in(
        engine,
        docker_peer.image,
        data,
        "for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/v/blob$i bs=1048576 count=10 2>/dev/null; done",
    )
    davit.configure(CONFIG)
    davit.start()
    write_job(
        davit,
        "vols.toml",
        f'name = "vols"\nkind = "volume.backup"\nengine = "{docker_peer.host}"\n'
        f'access = "helper"\nhelper_image = "{docker_peer.image}"\n'
        f'[source]\nnames = ["{data}"]\n',
    )
    davit.wait_for(
        lambda: any(e[3]["step"] == "store" for e in davit.events("type = 'CheckpointRecorded'")),
        120,
        "a store checkpoint",
        poll=0.005,
    )
    davit.kill9()
    run_id = davit.runs("vols")[-1]["run_id"]
    try:
        assert helpers_of(engine, run_id), "the kill must land while the helper reads the volume"
        # davitd died right after recording the operator's cancel, before the work stopped: the
        # next davitd ends the run cancelled without running its work again.
        anyio.run(record_cancel, davit.home / "state" / "davit.db", run_id)

        davit.start()
        run = davit.wait_run_state("vols", {"cancelled", "succeeded", "failed"}, timeout=60)
        assert run["state"] == "cancelled", run
        davit.wait_for(lambda: helpers_of(engine, run_id) == [], 30, "the ended run's helper to be removed", poll=0.2)
        assert f"removed what it left behind: davit-backup-{run_id}" in davit.logs[-1].read_text()
    finally:
        for name in helpers_of(engine, run_id):  # should the test fail: the volume can be removed
            engine.containers.get(name).remove(force=True)


def test_a_helper_image_missing_on_the_engine_fails_the_run_clearly_and_is_never_pulled(
    davit: Davit, docker_peer: DockerPeer, engine: docker.DockerClient
) -> None:
    tag = engine.davit_tag  # type: ignore[attr-defined]
    data = f"davit-e2e-{tag}-data"
    engine.volumes.create(data)
    davit.configure(CONFIG)
    davit.start()
    write_job(
        davit,
        "vols.toml",
        f'name = "vols"\nkind = "volume.backup"\nengine = "{docker_peer.host}"\n'
        f'access = "helper"\nhelper_image = "davit-test/absent:{tag}"\n'
        f'[source]\nnames = ["{data}"]\n',
    )
    run = davit.wait_run_state("vols", {"succeeded", "failed"}, timeout=120)
    assert run["state"] == "failed", run
    assert f"helper image davit-test/absent:{tag} is not on the engine" in run["error"]
    assert "never pulls" in run["error"]
    assert not engine.images.list(name="davit-test/absent")

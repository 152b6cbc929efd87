"""What a first volume backup and a volume restore say they amount to (their progress bar's
100%), against the real Docker engine peer: the store step's checkpoints carry a total whether
the volumes are read through their mountpoints (a scan) or a helper container (the engine's
volume sizes), and a restore's carry the restored volume's own figures, not the snapshot's."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.docker.backup import STORE
from davit.adapters.docker.helper_restore import RESTORE
from davit.adapters.docker.restore import VolumeRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from tests.fakes import ProgressRunContext
from tests.integration.docker.test_volume_adapter import SMALL, engine, names, run_in, run_work
from tests.integration.docker.test_volume_helper import backup, filled, restore_spec
from tests.peers.state import DockerPeer

__all__ = ["engine", "filled", "names"]  # fixtures shared with the other volume scenarios

pytestmark = pytest.mark.docker


class TotalFirstContext(ProgressRunContext):
    """Holds a step's first checkpoint until its total was told (the total comes from a thread
    beside the store; on so small a volume the store could otherwise end first)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id=run_id)
        self.told = threading.Event()

    def step_total(self, step: str, *, bytes_total: int | None = None, items_total: int | None = None) -> None:
        super().step_total(step, bytes_total=bytes_total, items_total=items_total)
        self.told.set()

    def checkpoint(self, step: str, cursor: dict[str, Any], **kw: Any) -> None:
        if step in (STORE, RESTORE):
            assert self.told.wait(120), f"no total was told for {step}"
        super().checkpoint(step, cursor, **kw)


def last(ctx: ProgressRunContext, step: str) -> dict[str, Any]:
    points = ctx.of(step)
    assert points, f"no checkpoint of {step}"
    return points[-1]


def test_a_first_backup_through_mountpoints_scans_what_it_then_stores(
    docker_peer: DockerPeer, filled: str, tmp_path: Path
) -> None:
    ctx = backup(docker_peer, Repository.open(tmp_path / "repo"), "m1", [filled], "mountpoint", TotalFirstContext("m1"))
    end = last(ctx, STORE)  # type: ignore[arg-type]
    assert (end["bytes_total"], end["items_total"]) == (end["bytes_done"], end["items_done"])


def test_a_first_backup_through_a_helper_takes_the_engines_volume_sizes(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    engine.volumes.create(names["other"])
    run_in(engine, docker_peer.image, names["other"], "echo other > /v/o.txt")
    ctx = backup(
        docker_peer, Repository.open(tmp_path / "repo"), "h1", [filled, names["other"]], "helper", TotalFirstContext("h1")
    )
    points = ctx.of(STORE)  # type: ignore[attr-defined]
    assert points and all(p["bytes_total"] is not None for p in points)
    end = points[-1]
    # bytes only (the engine counts no entries), and at least what was stored: 700 + 300 kB
    # and a few small files
    assert end["items_total"] is None
    assert end["bytes_total"] >= end["bytes_done"] >= 1000 * 1024


def test_a_restore_knows_the_size_of_the_one_volume_it_restores(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    engine.volumes.create(names["other"])
    run_in(engine, docker_peer.image, names["other"], "dd if=/dev/urandom of=/v/big bs=1024 count=2000 2>/dev/null")
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "b1", [filled, names["other"]], "mountpoint")
    for access in ("mountpoint", "helper"):
        target = f"{names['restored']}-{access}"
        spec = restore_spec(docker_peer.host, docker_peer.image, filled, target, "b1", access)
        ctx = TotalFirstContext(f"r-{access}")
        try:
            run_work(VolumeRestoreWork(RunInputs(spec, ctx.run_id, SMALL, repo=repo)), ctx)
        finally:
            engine.volumes.get(target).remove(force=True)
        end = last(ctx, RESTORE)
        # the chosen volume's 1 MB, not the snapshot's 3 MB; through a helper a hard link's
        # bytes are not sent again, so the amount done may end below
        assert end["bytes_total"] < 2000 * 1024 and end["items_total"] == 12, access
        assert end["bytes_total"] >= end["bytes_done"] and end["items_total"] >= end["items_done"], access
        if access == "mountpoint":
            assert (end["bytes_total"], end["items_total"]) == (end["bytes_done"], end["items_done"])

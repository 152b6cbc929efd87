"""`davit check` and the run agree on a files or volume restore's snapshot: it must exist and be
of a kind the restore takes (files.restore: a files or a volumes snapshot; volume.restore: a
volumes one). Before, neither looked at the kind: the check passed, and the run read a
database's tree as a corrupt files tree, or said the volume was not in the snapshot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import zstandard

from davit.adapters.docker.restore import VolumeRestoreWork
from davit.adapters.files.restore import FilesRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from davit.domain.jobs import FilesRestoreJob, VolumeRestoreJob
from tests.fakes import MemoryRunContext
from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.integration.test_files_adapter import backup as files_backup
from tests.peers.state import DockerPeer


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


@pytest.fixture
def repo(home: Path, tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo")


def database_snapshot(repo: Repository, job: str) -> None:
    """A snapshot whose manifest says it is a PostgreSQL one (a line per table, no files tree)."""
    tree = zstandard.ZstdCompressor().compress(b'{"kind": "schema", "db": "shop"}\n')
    repo.publish_snapshot({"id": "pg1", "job": job, "kind": "postgres", "created_at": "2026-01-01T00:00:00+00:00"}, tree)


def files_snapshot(repo: Repository, tmp_path: Path, job: str) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    files_backup(repo, src, "f1", name=job)


def files_restore_body(tmp_path: Path, job: str) -> str:
    return f'kind = "files.restore"\n[source]\njob = "{job}"\n[target]\npath = "{tmp_path / "out"}"\n'


def test_a_files_restore_of_a_database_snapshot_fails_at_the_snapshot_and_its_run_refuses_it(
    home: Path, repo: Repository, tmp_path: Path
) -> None:
    database_snapshot(repo, "pg")
    out = check(home, job_file(tmp_path / "jobs", "back", files_restore_body(tmp_path, "pg")))
    assert out.exit_code == 1 and out.failed() == [("repository local", "snapshot")], out.lines
    assert "a postgres snapshot of job pg, not a files or volumes one" in out.detail("repository local", "snapshot")

    spec = FilesRestoreJob.model_validate(
        {"name": "back", "kind": "files.restore", "source": {"job": "pg"}, "target": {"path": str(tmp_path / "out")}}
    )
    work = FilesRestoreWork(RunInputs(spec, "r1", Tuning(), repo=repo))
    with pytest.raises(PermanentError, match=r"is a postgres snapshot; files\.restore restores a files or volumes one"):
        work.prepare(MemoryRunContext(run_id="r1"))
    assert not (tmp_path / "out").exists()


def test_a_files_restore_of_a_files_snapshot_passes_the_snapshot_check(home: Path, repo: Repository, tmp_path: Path) -> None:
    files_snapshot(repo, tmp_path, "docs")
    out = check(home, job_file(tmp_path / "jobs", "back", files_restore_body(tmp_path, "docs")))
    assert out.verdict("repository local", "snapshot") == "ok" and out.exit_code == 0, out.lines


@pytest.fixture
def target_volume(docker_peer: DockerPeer) -> Iterator[str]:
    name = f"davitcheck{uuid.uuid4().hex[:8]}"
    yield name
    client = docker.DockerClient(base_url=docker_peer.host)
    try:
        for v in client.volumes.list(filters={"name": name}):
            v.remove(force=True)
    finally:
        client.close()


def test_a_volume_restore_of_a_files_snapshot_fails_at_the_snapshot_and_its_run_makes_no_volume(
    home: Path, repo: Repository, tmp_path: Path, docker_peer: DockerPeer, target_volume: str
) -> None:
    files_snapshot(repo, tmp_path, "docs")
    body = (
        f'kind = "volume.restore"\nengine = "{docker_peer.host}"\nvolume = "docs"\n'
        f'[source]\njob = "docs"\n[target]\nvolume = "{target_volume}"\n'
    )
    out = check(home, job_file(tmp_path / "jobs", "volback", body))
    assert out.exit_code == 1 and ("repository local", "snapshot") in out.failed(), out.lines
    assert "a files snapshot of job docs, not a volumes one" in out.detail("repository local", "snapshot")

    spec = VolumeRestoreJob.model_validate(
        {
            "name": "volback",
            "kind": "volume.restore",
            "engine": docker_peer.host,
            "volume": "docs",
            "source": {"job": "docs"},
            "target": {"volume": target_volume},
        }
    )
    work = VolumeRestoreWork(RunInputs(spec, "r1", Tuning(), repo=repo))
    with pytest.raises(PermanentError, match=r"is a files snapshot; volume\.restore restores a volumes one"):
        work.prepare(MemoryRunContext(run_id="r1"))
    client = docker.DockerClient(base_url=docker_peer.host)
    try:
        assert not client.volumes.list(filters={"name": target_volume})
    finally:
        client.close()

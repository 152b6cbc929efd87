"""`davit check` on weaviate.restore and weaviate.clear against the real server: a restore from
a snapshot really backed up passes under a new name and fails onto a collection that exists
(`if_exists = "fail"`) or from a snapshot of another kind; a clear passes on a collection that
exists and fails on one that does not; a server that does not answer fails at connecting. A
check deletes no object and makes no collection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from weaviate.classes.config import Configure

from davit.adapters.repository.repository import Repository
from tests.integration.check.helpers import check, davit, job_file, listing, make_home
from tests.integration.test_files_adapter import backup as files_backup
from tests.integration.weaviate.helpers import backup_spec, connect, prefix, run_backup
from tests.peers.state import WeaviatePeer


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


@pytest.fixture
def collection(weaviate_peer: WeaviatePeer) -> Iterator[str]:
    """A collection of three objects (no vectorizer), deleted afterwards."""
    name = prefix()
    with connect(weaviate_peer) as client:
        made = client.collections.create(name, vector_config=Configure.Vectors.self_provided())
        made.data.insert_many([{"n": i} for i in range(3)])
    yield name
    with connect(weaviate_peer) as client:
        client.collections.delete(name)


def state(peer: WeaviatePeer, name: str) -> tuple[set[str], int]:
    """The collections on the server, and how many objects `name` holds."""
    with connect(peer) as client:
        names = set(client.collections.list_all(simple=True))
        return names, len(list(client.collections.get(name).iterator()))


def connection(peer: WeaviatePeer, http_port: int | None = None) -> str:
    return f'host = "{peer.host}"\nhttp_port = {http_port or peer.http_port}\ngrpc_port = {peer.grpc_port}\n'


def restore_job(tmp_path: Path, peer: WeaviatePeer, target: str, job: str = "wvjob", http_port: int | None = None) -> Path:
    body = f'kind = "weaviate.restore"\n[source]\njob = "{job}"\n[target]\n{connection(peer, http_port)}{target}'
    return job_file(tmp_path / "jobs", "wvback", body)


def clear_job(tmp_path: Path, peer: WeaviatePeer, name: str, http_port: int | None = None) -> Path:
    body = f'kind = "weaviate.clear"\nconfirm = true\n[target]\n{connection(peer, http_port)}collection = "{name}"\n'
    return job_file(tmp_path / "jobs", "wvclear", body)


@pytest.fixture
def snapshot(tmp_path: Path, weaviate_peer: WeaviatePeer, collection: str) -> str:
    run_backup(Repository.open(tmp_path / "repo"), backup_spec(weaviate_peer, name="wvjob", collections=[collection]), "b1")
    return collection


def test_a_weaviate_restore_under_a_new_name_passes_and_makes_nothing(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer, snapshot: str
) -> None:
    before = listing(tmp_path / "repo"), state(weaviate_peer, snapshot)
    target = f'collections = ["{snapshot}"]\nrename = {{ {snapshot} = "{snapshot}Back" }}\n'
    out = check(home, restore_job(tmp_path, weaviate_peer, target))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.verdict("repository local", "snapshot") == "ok"
    assert f"{snapshot}Back" in out.detail("target", "collections free")
    assert (listing(tmp_path / "repo"), state(weaviate_peer, snapshot)) == before


def test_a_weaviate_restore_onto_a_collection_that_exists_fails_naming_it(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer, snapshot: str
) -> None:
    out = check(home, restore_job(tmp_path, weaviate_peer, f'collections = ["{snapshot}"]\n'))
    assert out.exit_code == 1 and out.failed() == [("target", "collections free")], out.lines
    assert snapshot in out.detail("target", "collections free")


def test_a_weaviate_restore_whose_server_does_not_answer_fails_at_connecting(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer, snapshot: str
) -> None:
    out = check(home, restore_job(tmp_path, weaviate_peer, "", http_port=9))
    assert out.exit_code == 1 and out.failed() == [("target", "connects")], out.lines


def test_a_weaviate_restore_of_a_files_snapshot_fails_at_the_snapshot(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer
) -> None:
    """A defect: the check passed and the run then refused the snapshot as not a weaviate one."""
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    files_backup(Repository.open(tmp_path / "repo"), src, "f1", name="docs")
    out = check(home, restore_job(tmp_path, weaviate_peer, "", job="docs"))
    assert out.exit_code == 1 and out.failed() == [("repository local", "snapshot")], out.lines
    assert "a files snapshot" in out.detail("repository local", "snapshot")


def test_a_weaviate_clear_passes_on_its_collection_and_deletes_nothing(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer, collection: str
) -> None:
    before = state(weaviate_peer, collection)
    out = check(home, clear_job(tmp_path, weaviate_peer, collection))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.detail("target", "collection") == collection
    assert state(weaviate_peer, collection) == before and before[1] == 3


def test_a_weaviate_clear_of_a_missing_collection_fails_naming_it(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer, collection: str
) -> None:
    out = check(home, clear_job(tmp_path, weaviate_peer, "NoSuchCollectionHere"))
    assert out.exit_code == 1 and out.failed() == [("target", "collection")], out.lines
    assert "NoSuchCollectionHere" in out.detail("target", "collection")
    bad_port = check(home, clear_job(tmp_path, weaviate_peer, collection, http_port=9))
    assert bad_port.exit_code == 1 and bad_port.failed() == [("target", "connects")], bad_port.lines

"""`davit check` on mongo.restore, mongo.export and mongo.import against the real server
(FerretDB): good and wrong credentials, a collection or file that is not there, a snapshot of
another kind, a mongodump directory that is not there. A check writes nothing: no export file
appears, no document is inserted, the repository is unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from davit.adapters.mongo.backup import MongoBackupWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.check.helpers import check, davit, job_file, listing, make_home
from tests.integration.check.test_check_databases import secret_file
from tests.integration.test_files_adapter import backup as files_backup
from tests.peers.state import MongoPeer, load


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


@pytest.fixture
def db(mongo_peer: MongoPeer) -> Iterator[str]:
    """A database `chk_...` with one collection `items` of two documents."""
    name = f"chk_{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, object]] = MongoClient(mongo_peer.uri)
    client[name]["items"].insert_many([{"_id": 1, "a": "x"}, {"_id": 2, "a": "y"}])
    yield name
    client.drop_database(name)
    client.close()


def count(peer: MongoPeer, db: str) -> dict[str, int]:
    client: MongoClient[dict[str, object]] = MongoClient(peer.uri)
    try:
        return {c: client[db][c].count_documents({}) for c in client[db].list_collection_names()}
    finally:
        client.close()


@pytest.fixture
def uri(tmp_path: Path, mongo_peer: MongoPeer) -> Path:
    return secret_file(tmp_path, "uri", mongo_peer.uri)


@pytest.fixture
def wrong_uri(tmp_path: Path) -> Path:
    entry = load()["mongo"]
    if not entry.get("auth_port"):
        pytest.fail("the mongo peer has no authenticating listener (auth_port) in its state")
    return secret_file(tmp_path, "wrong", f"mongodb://{entry['auth_user']}:wrong-mongo-pw@127.0.0.1:{entry['auth_port']}/")


# --- mongo.restore -----------------------------------------------------------------------------


def restore_job(tmp_path: Path, uri_file: Path, source: str) -> Path:
    body = f'kind = "mongo.restore"\n[source]\n{source}[target]\nuri_file = "{uri_file}"\nns_from = ["*.*"]\nns_to = ["x_*.*"]\n'
    return job_file(tmp_path / "jobs", "mback", body)


@pytest.fixture
def snapshot(tmp_path: Path, uri: Path, db: str) -> str:
    spec = job_from_dict({"name": "mdb", "kind": "mongo.backup", "source": {"uri_file": str(uri), "databases": [db]}}, "m.toml")
    ctx = MemoryRunContext(run_id="b1")
    work = MongoBackupWork(RunInputs(spec, "b1", repo=Repository.open(tmp_path / "repo")))
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return db


def test_a_mongo_restore_passes_with_its_uri_and_changes_nothing(
    home: Path, tmp_path: Path, mongo_peer: MongoPeer, uri: Path, snapshot: str
) -> None:
    before = listing(tmp_path / "repo"), count(mongo_peer, snapshot)
    out = check(home, restore_job(tmp_path, uri, 'job = "mdb"\n'))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.verdict("repository local", "snapshot") == "ok" and out.verdict("target", "connects") == "ok"
    assert (listing(tmp_path / "repo"), count(mongo_peer, snapshot)) == before
    assert mongo_peer.uri not in out.text


def test_a_mongo_restore_with_a_wrong_password_fails_at_connecting(
    home: Path, tmp_path: Path, wrong_uri: Path, snapshot: str
) -> None:
    out = check(home, restore_job(tmp_path, wrong_uri, 'job = "mdb"\n'))
    assert out.exit_code == 1 and out.failed() == [("target", "connects")], out.lines
    assert "wrong-mongo-pw" not in out.text


def test_a_mongo_restore_of_a_files_snapshot_fails_at_the_snapshot(home: Path, tmp_path: Path, uri: Path) -> None:
    """A defect: the check passed and the run then refused the snapshot as not a MongoDB one."""
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    files_backup(Repository.open(tmp_path / "repo"), src, "f1", name="docs")
    out = check(home, restore_job(tmp_path, uri, 'job = "docs"\n'))
    assert out.exit_code == 1 and out.failed() == [("repository local", "snapshot")], out.lines
    assert "a files snapshot" in out.detail("repository local", "snapshot")


def test_a_mongo_restore_from_a_missing_mongodump_directory_fails_naming_it(home: Path, tmp_path: Path, uri: Path) -> None:
    """A defect: the dump directory was not looked at; the run then failed reading it."""
    gone = tmp_path / "dump-gone"
    out = check(home, restore_job(tmp_path, uri, f'from_mongodump = "{gone}"\n'))
    assert out.exit_code == 1 and out.failed() == [("source", "readable")], out.lines
    assert str(gone) in out.detail("source", "readable")
    (tmp_path / "dump").mkdir()
    good = check(home, restore_job(tmp_path, uri, f'from_mongodump = "{tmp_path / "dump"}"\n'))
    assert good.exit_code == 0 and good.verdict("source", "readable") == "ok", good.lines


# --- mongo.export ------------------------------------------------------------------------------


def export_job(tmp_path: Path, uri_file: Path, namespace: str) -> Path:
    output = tmp_path / "out" / "items.jsonl"
    body = f'kind = "mongo.export"\n[source]\nuri_file = "{uri_file}"\nnamespace = "{namespace}"\n[output]\npath = "{output}"\n'
    return job_file(tmp_path / "jobs", "mexport", body)


def test_a_mongo_export_passes_and_writes_no_file(home: Path, tmp_path: Path, uri: Path, db: str) -> None:
    out = check(home, export_job(tmp_path, uri, f"{db}.items"))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.detail("source", "collection") == f"{db}.items"
    assert out.verdict("output", "writable") == "ok"
    assert not (tmp_path / "out").exists()


def test_a_mongo_export_of_a_missing_collection_fails_naming_it(home: Path, tmp_path: Path, uri: Path, db: str) -> None:
    out = check(home, export_job(tmp_path, uri, f"{db}.nosuch"))
    assert out.exit_code == 1 and out.failed() == [("source", "collection")], out.lines
    assert f"{db}.nosuch" in out.detail("source", "collection")


def test_a_mongo_export_with_a_wrong_password_fails_at_connecting(home: Path, tmp_path: Path, wrong_uri: Path, db: str) -> None:
    out = check(home, export_job(tmp_path, wrong_uri, f"{db}.items"))
    assert out.exit_code == 1 and out.failed() == [("source", "connects")], out.lines
    assert "wrong-mongo-pw" not in out.text


# --- mongo.import ------------------------------------------------------------------------------


def import_job(tmp_path: Path, uri_file: Path, namespace: str, path: Path) -> Path:
    body = f'kind = "mongo.import"\n[input]\npath = "{path}"\n[target]\nuri_file = "{uri_file}"\nnamespace = "{namespace}"\n'
    return job_file(tmp_path / "jobs", "mimport", body)


def test_a_mongo_import_passes_and_inserts_nothing(home: Path, tmp_path: Path, mongo_peer: MongoPeer, uri: Path, db: str) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"_id": 3, "a": "z"}\n')
    before = count(mongo_peer, db)
    out = check(home, import_job(tmp_path, uri, f"{db}.items", data))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert str(data) in out.detail("input", "readable")
    assert count(mongo_peer, db) == before == {"items": 2}


def test_a_mongo_import_of_a_missing_file_fails_naming_it(home: Path, tmp_path: Path, uri: Path, db: str) -> None:
    out = check(home, import_job(tmp_path, uri, f"{db}.items", tmp_path / "gone.jsonl"))
    assert out.exit_code == 1 and out.failed() == [("input", "readable")], out.lines
    assert str(tmp_path / "gone.jsonl") in out.detail("input", "readable")


def test_a_mongo_import_with_a_wrong_password_fails_at_connecting(home: Path, tmp_path: Path, wrong_uri: Path, db: str) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    out = check(home, import_job(tmp_path, wrong_uri, f"{db}.items", data))
    assert out.exit_code == 1 and out.failed() == [("target", "connects")], out.lines
    assert "wrong-mongo-pw" not in out.text

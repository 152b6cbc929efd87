"""`kill -9` of davitd in the middle of a mongo.backup and of a mongo.restore of a collection of
50,000 documents of about 1 KB: after a restart the run completes, counts and content match
(sha256 of every document's raw BSON in `_id` order) and nothing is duplicated.

The size only has to put the kill well inside the run: the restore records a checkpoint per
chunk (1 MiB, ~1,000 documents) and is killed after 3 of them, the backup one every 0.2 s and is
killed after 3 with documents; each test asserts the kill landed mid-collection."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId, encode
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from tests.e2e.conftest import Davit, write_job
from tests.peers.state import MongoPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.mongo]

DOCS = 50_000
CONFIG = "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.2\n"


@pytest.fixture(scope="module")
def big(mongo_peer: MongoPeer) -> Iterator[tuple[MongoClient[Any], str, str]]:
    """A database with one collection of 50,000 documents of about 1 KB; (client, db, digest)."""
    client: MongoClient[Any] = MongoClient(mongo_peer.uri, serverSelectionTimeoutMS=10_000)
    db = f"big_{uuid.uuid4().hex[:8]}"
    coll = client[db]["items"]
    batch: list[RawBSONDocument] = []
    for i in range(DOCS):
        batch.append(RawBSONDocument(encode({"_id": ObjectId(), "n": i, "name": f"item {i}", "pad": os.urandom(470).hex()})))
        if len(batch) == 2000:
            coll.insert_many(batch, ordered=False)
            batch = []
    coll.create_index("n", name="by_n")
    yield client, db, stream_digest(client, db, "items")
    client.drop_database(db)
    client.close()


def stream_digest(client: MongoClient[Any], db: str, coll: str) -> str:
    h = hashlib.sha256()
    for batch in client[db][coll].find_raw_batches(sort=[("_id", 1)], batch_size=2000):
        h.update(batch)
    return h.hexdigest()


def checkpoints(davit: Davit, run_id: str) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")]


def kill_after_checkpoints(davit: Davit, job: str, count: int) -> str:
    def run_id() -> str | None:
        runs = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
        return str(runs[-1][3]["run_id"]) if runs else None

    def enough() -> bool:
        rid = run_id()
        return rid is not None and len([c for c in checkpoints(davit, rid) if c["items_done"] > 0]) >= count

    davit.wait_for(enough, 300, f"{count} checkpoints of {job}", poll=0.01)
    davit.kill9()
    rid = run_id()
    assert rid is not None
    return rid


def uri_file(tmp_path: Path, uri: str) -> Path:
    path = tmp_path / "mongo.uri"
    path.write_text(uri)
    return path


def backup_job(name: str, db: str, uri: Path) -> str:
    return f'name = "{name}"\nkind = "mongo.backup"\n[source]\nuri_file = "{uri}"\ndatabases = ["{db}"]\n'


def test_backup_killed_mid_collection_resumes_and_the_snapshot_matches(
    davit: Davit, big: tuple[Any, str, str], tmp_path: Path, mongo_peer: MongoPeer
) -> None:
    _client, db, digest = big
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", backup_job("big", db, uri_file(tmp_path, mongo_peer.uri)))
    run_id = kill_after_checkpoints(davit, "big", 3)
    assert davit.runs("big")[-1]["state"] == "running", "the kill must land in the middle of the backup"
    docs_at_kill = max(c["items_done"] for c in checkpoints(davit, run_id))
    assert 0 < docs_at_kill < DOCS

    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=600)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    after = checkpoints(davit, run_id)
    written = [c for cp in after for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    done = [cp["items_done"] for cp in after if cp["step"].startswith("dump:")]
    assert done == sorted(done) and done[-1] == DOCS

    [snap] = davit.json_lines("snapshots", "--job", "big")
    assert snap["stats"]["documents"] == DOCS
    out = tmp_path / "dump"
    davit.cli("export", "mongodump", run_id, str(out), timeout=600)
    h = hashlib.sha256()
    with open(out / db / "items.bson", "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    assert h.hexdigest() == digest  # every document once, byte-identical, in _id order
    assert "0 problems" in davit.cli("verify", run_id, timeout=600).stdout


def test_restore_killed_mid_collection_resumes_and_inserts_each_document_once(
    davit: Davit, big: tuple[Any, str, str], tmp_path: Path, mongo_peer: MongoPeer
) -> None:
    client, db, digest = big
    davit.configure(CONFIG)
    davit.start()
    uri = uri_file(tmp_path, mongo_peer.uri)
    write_job(davit, "big.toml", backup_job("big", db, uri))
    assert davit.wait_run_state("big", {"succeeded", "failed"}, timeout=600)["state"] == "succeeded"
    target = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        write_job(
            davit,
            "back.toml",
            f'name = "back"\nkind = "mongo.restore"\n[source]\njob = "big"\n'
            f'[target]\nuri_file = "{uri}"\nns_from = ["{db}.*"]\nns_to = ["{target}.*"]\n'
            f"drop = true\n",
        )
        run_id = kill_after_checkpoints(davit, "back", 3)
        assert davit.runs("back")[-1]["state"] == "running"
        docs_at_kill = max(c["items_done"] for c in checkpoints(davit, run_id))
        assert 0 < docs_at_kill < DOCS

        davit.start()
        run = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=600)
        assert run["state"] == "succeeded", run
        assert run["run_id"] == run_id and run["interruptions"] == 1
        done = [c["items_done"] for c in checkpoints(davit, run_id) if c["items_done"]]
        assert done == sorted(done) and done[-1] == DOCS
        coll = client[target]["items"]
        assert coll.count_documents({}) == DOCS
        ids = [d["_id"] for d in coll.find({}, {"_id": 1})]
        assert len(ids) == DOCS and len(set(ids)) == DOCS
        assert stream_digest(client, target, "items") == digest
        assert "by_n" in [i["name"] for i in coll.list_indexes()]
        history = [json.dumps(e) for e in davit.history(run_id)]
        assert sum('"RunInterrupted"' in e for e in history) == 1
    finally:
        client.drop_database(target)

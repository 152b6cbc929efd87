"""mongodump's directory format: `davit export mongodump` read back with pymongo's own reader
(`bson.decode_file_iter`, `bson.json_util` canonical), `davit import mongodump` of a directory
written without davit, restores straight from a dump, and options/indexes the target rejects."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import ObjectId, json_util
from bson.codec_options import CodecOptions

from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError
from tests.integration.mongo.conftest import Mongo
from tests.integration.mongo.helpers import backup_spec as bspec
from tests.integration.mongo.helpers import every_type_docs, raw_by_id, restore_spec, run_backup, run_restore, seed_raw

pytestmark = pytest.mark.mongo
BIN = Path(sys.executable).parent
CANONICAL = json_util.CANONICAL_JSON_OPTIONS
DECODE: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def davit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "davit"), "--home", str(home), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def seed(mongo: Mongo, app: str) -> None:
    seed_raw(mongo.client, f"{app}.everything", every_type_docs())
    mongo.client[app]["everything"].create_index([("int32", -1)], name="by_int32")
    mongo.client[app].create_collection("capped", capped=True, size=1 << 20)
    seed_raw(mongo.client, f"{app}.capped", [{"_id": ObjectId(), "n": i} for i in range(2500)])


def read_file(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_export_writes_a_directory_mongorestore_reads(mongo: Mongo, home: Path, tmp_path: Path, compress: bool) -> None:
    app = mongo.db("app")
    seed(mongo, app)
    raw = {c: raw_by_id(mongo.client, f"{app}.{c}") for c in ("everything", "capped")}
    uuids = {c["name"]: c["info"]["uuid"].hex() for c in mongo.client[app].list_collections()}
    repo = Repository.open(home / "repository")
    run_backup(repo, bspec("exp", databases=[app], chunk_kib=32), "snap1")
    out = tmp_path / "dump"
    davit(home, "export", "mongodump", "snap1", str(out), *(["--gzip"] if compress else []))

    gz = ".gz" if compress else ""
    assert sorted(p.name for p in (out / app).iterdir()) == sorted(
        f"{c}{s}{gz}" for c in ("capped", "everything") for s in (".bson", ".metadata.json")
    )
    for coll in ("everything", "capped"):
        data = read_file(out / app / f"{coll}.bson{gz}")
        # the file is the documents' raw BSON in _id order, byte for byte
        assert data == b"".join(raw[coll].values())
        expected = [bson.decode(doc, DECODE) for doc in raw[coll].values()]
        path = out / app / f"{coll}.bson{gz}"
        with gzip.open(path) if compress else open(path, "rb") as fh:
            decoded = list(bson.decode_file_iter(fh, DECODE))
        assert len(decoded) == len(expected)
        for got, want in zip(decoded, expected, strict=True):
            assert list(got) == list(want)  # same fields, same order
            for key in want:
                assert got[key] == want[key] and type(got[key]) is type(want[key]), key
        text = read_file(out / app / f"{coll}.metadata.json{gz}").decode()
        meta = json_util.loads(text, json_options=CANONICAL)
        assert json_util.dumps(meta, json_options=CANONICAL) == text  # canonical Extended JSON
        assert meta["collectionName"] == coll and meta["type"] == "collection" and meta["uuid"] == uuids[coll]
        assert {i["name"] for i in meta["indexes"]} >= {"_id_"}
    meta = json.loads(read_file(out / app / f"capped.metadata.json{gz}"))
    assert meta["options"]["capped"] is True and int(next(iter(meta["options"]["size"].values()))) == 1 << 20
    everything = json.loads(read_file(out / app / f"everything.metadata.json{gz}"))
    assert {"v": {"$numberInt": "2"}, "key": {"int32": {"$numberInt": "-1"}}, "name": "by_int32"} in everything["indexes"]


def test_backup_export_import_restore_round_trip_is_byte_identical(mongo: Mongo, home: Path, tmp_path: Path) -> None:
    app = mongo.db("app")
    seed(mongo, app)
    raw = {c: raw_by_id(mongo.client, f"{app}.{c}") for c in ("everything", "capped")}
    indexes = list(mongo.client[app]["everything"].list_indexes())
    repo = Repository.open(home / "repository")
    run_backup(repo, bspec("orig", databases=[app]), "snap1")
    davit(home, "export", "mongodump", "snap1", str(tmp_path / "dump"), "--gzip")
    imported = json.loads(davit(home, "import", "mongodump", str(tmp_path / "dump"), "--job", "legacy", "--json").stdout)
    assert imported["job"] == "legacy" and imported["kind"] == "mongo"
    assert imported["stats"]["documents"] == sum(len(v) for v in raw.values())
    assert "0 problems" in davit(home, "verify", imported["id"]).stdout

    mongo.client.drop_database(app)
    repo.refresh_index()
    run_restore(repo, restore_spec("back", {"job": "legacy"}), "r1")
    for coll, docs in raw.items():
        assert raw_by_id(mongo.client, f"{app}.{coll}") == docs
    assert list(mongo.client[app]["everything"].list_indexes()) == indexes
    assert mongo.client[app]["capped"].options() == {"capped": True, "size": 1 << 20}


def write_dump(root: Path, db: str, coll: str, docs: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """A mongodump directory written from the format's description alone."""
    (root / db).mkdir(parents=True)
    (root / db / f"{coll}.bson").write_bytes(b"".join(bson.encode(d) for d in docs))
    (root / db / f"{coll}.metadata.json").write_text(json_util.dumps(meta, json_options=CANONICAL))


def test_restore_from_a_mongodump_directory_reports_rejected_index_and_option_by_name(
    mongo: Mongo, repo: Repository, tmp_path: Path
) -> None:
    db = mongo.db("legacy")
    docs = [{"_id": i, "at": i * 10} for i in range(3000)]
    meta = {
        "options": {"validator": {"$jsonSchema": {"required": ["at"]}}},
        "indexes": [
            {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            {"v": 2, "key": {"at": 1}, "name": "at_ttl", "expireAfterSeconds": 60},
            {"v": 2, "key": {"at": -1}, "name": "at_desc"},
        ],
        "uuid": "0123456789abcdef0123456789abcdef",
        "collectionName": "events",
        "type": "collection",
    }
    write_dump(tmp_path / "dump", db, "events", docs, meta)
    spec = restore_spec("from-dump", {"from_mongodump": str(tmp_path / "dump")})
    ctx, details, summary = run_restore(repo, spec, "r1")
    assert details["namespaces"] == [[f"{db}.events", f"{db}.events"]]
    assert summary["documents"] == 3000
    assert any("index at_ttl" in w for w in ctx.warnings), ctx.warnings
    assert any("option(s) validator" in w for w in ctx.warnings), ctx.warnings
    assert [i["name"] for i in mongo.client[db]["events"].list_indexes()] == ["_id_", "at_desc"]
    assert [bson.decode(d) for d in raw_by_id(mongo.client, f"{db}.events").values()] == docs


def test_strict_restore_fails_on_a_rejected_index_naming_it(mongo: Mongo, repo: Repository, tmp_path: Path) -> None:
    db = mongo.db("legacy")
    meta = {
        "options": {},
        "indexes": [{"v": 2, "key": {"at": 1}, "name": "at_ttl", "expireAfterSeconds": 60}],
        "collectionName": "events",
        "type": "collection",
    }
    write_dump(tmp_path / "dump", db, "events", [{"_id": 1, "at": 1}], meta)
    spec = restore_spec("strict", {"from_mongodump": str(tmp_path / "dump")}, strict=True)
    with pytest.raises(PermanentError, match="index at_ttl rejected"):
        run_restore(repo, spec, "r1")

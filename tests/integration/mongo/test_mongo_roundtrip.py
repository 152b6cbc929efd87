"""mongo.backup then mongo.restore against the real FerretDB peer: byte-identical raw BSON per
`_id`, indexes and options back, remapping and include/exclude, resuming without duplicates."""

from __future__ import annotations

import json
import os

import pytest
from bson import ObjectId, encode
from bson.raw_bson import RawBSONDocument

from davit.adapters.mongo.layout import meta_from_text, read_tree
from davit.adapters.repository.repository import Repository
from davit.domain.errors import RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.mongo.conftest import Mongo
from tests.integration.mongo.helpers import backup_spec as bspec
from tests.integration.mongo.helpers import (
    every_type_docs,
    raw_by_id,
    restore_spec,
    run_backup,
    run_restore,
    seed_raw,
)

pytestmark = pytest.mark.mongo


def seed_app(mongo: Mongo, app: str) -> None:
    seed_raw(mongo.client, f"{app}.everything", every_type_docs())
    mongo.client[app]["everything"].create_index([("int32", 1), ("text", -1)], name="int32_text")
    mongo.client[app]["everything"].create_index("kind", unique=True, sparse=True, name="kind_unique")
    mongo.client[app].create_collection("capped", capped=True, size=1 << 20)
    seed_raw(mongo.client, f"{app}.capped", [{"_id": i, "v": f"c{i}"} for i in range(50)])
    seed_raw(mongo.client, f"{app}.users", [{"_id": ObjectId(), "name": f"u{i}", "n": i} for i in range(3000)])
    mongo.client[app].create_collection("empty")


def test_every_bson_type_round_trips_byte_identical_with_indexes_and_options(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_app(mongo, app)
    source = {ns: raw_by_id(mongo.client, f"{app}.{ns}") for ns in ("everything", "capped", "users", "empty")}
    source_indexes = list(mongo.client[app]["everything"].list_indexes())
    _, result = run_backup(repo, bspec("app-backup", databases=[app], chunk_kib=64), "snap1")
    assert result["collections"] == 4 and result["documents"] == sum(len(v) for v in source.values())

    mongo.client.drop_database(app)
    _, _details, summary = run_restore(repo, restore_spec("app-restore", {"job": "app-backup"}), "r1")
    assert summary["documents"] == result["documents"]
    for coll, docs in source.items():
        assert raw_by_id(mongo.client, f"{app}.{coll}") == docs, coll
    indexes = list(mongo.client[app]["everything"].list_indexes())
    assert indexes == source_indexes
    assert [dict(i["key"]) for i in indexes] == [{"_id": 1}, {"int32": 1, "text": -1}, {"kind": 1}]
    assert indexes[2]["unique"] is True
    options = mongo.client[app]["capped"].options()
    assert options.get("capped") is True and options.get("size") == 1 << 20


def test_snapshot_holds_mongodump_metadata_for_each_collection(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_app(mongo, app)
    run_backup(repo, bspec("meta", databases=[app]), "snap1")
    entries = {e.ns: e for e in read_tree(repo.tree_bytes(repo.resolve("snap1")))}
    meta = meta_from_text(entries[f"{app}.capped"].meta)
    assert list(meta) == ["options", "indexes", "uuid", "collectionName", "type"]
    assert meta["collectionName"] == "capped" and meta["type"] == "collection"
    assert meta["options"]["capped"] is True and len(meta["uuid"]) == 32
    raw_text = json.loads(entries[f"{app}.everything"].meta)
    assert raw_text["indexes"][0]["v"] == {"$numberInt": "2"}  # canonical Extended JSON, as mongodump writes
    assert entries[f"{app}.users"].docs == 3000 and len(entries[f"{app}.users"].chunks) >= 1


def test_remap_app_star_to_staging_star_with_include_and_exclude(mongo: Mongo, repo: Repository) -> None:
    app, staging = mongo.db("app"), mongo.db("staging")
    seed_app(mongo, app)
    users = raw_by_id(mongo.client, f"{app}.users")
    run_backup(repo, bspec("remap", databases=[app], exclude=[f"{app}.empty"]), "snap1")
    spec = restore_spec(
        "remap-restore",
        {"job": "remap"},
        ns_include=[f"{app}.u*", f"{app}.capped"],
        ns_exclude=[f"{app}.capped"],
        ns_from=[f"{app}.*"],
        ns_to=[f"{staging}.*"],
    )
    _, details, _ = run_restore(repo, spec, "r1")
    assert details["namespaces"] == [[f"{app}.users", f"{staging}.users"]]
    assert sorted(mongo.client[staging].list_collection_names()) == ["users"]
    assert raw_by_id(mongo.client, f"{staging}.users") == users
    assert "empty" in mongo.client[app].list_collection_names()  # the source was left alone


def test_variables_in_ns_from_and_ns_to_swap_database_and_collection(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_raw(mongo.client, f"{app}.orders", [{"_id": i} for i in range(10)])
    run_backup(repo, bspec("vars", databases=[app]), "snap1")
    target = mongo.db("orders")
    spec = restore_spec("vars-restore", {"job": "vars"}, ns_from=["$db$.$coll$"], ns_to=[f"$coll$_{mongo.tag}.$db$"])
    _, details, _ = run_restore(repo, spec, "r1")
    assert details["namespaces"] == [[f"{app}.orders", f"{target}.{app}"]]
    assert mongo.client[target][app].count_documents({}) == 10


def test_query_filter_and_include_select_what_is_backed_up(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_app(mongo, app)
    spec = bspec(
        "filtered", databases=[app], include=[f"{app}.u*", f"{app}.cap*"], query={f"{app}.users": '{"n": {"$gte": 2990}}'}
    )
    _, _result = run_backup(repo, spec, "snap1")
    entries = {e.ns: e.docs for e in read_tree(repo.tree_bytes(repo.resolve("snap1")))}
    assert entries == {f"{app}.capped": 50, f"{app}.users": 10}


def test_backup_stopped_mid_collection_resumes_after_the_last_id_without_duplicates(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    # mixed _id types: the resume filter must step over BSON type brackets
    docs = (
        [{"_id": i, "pad": os.urandom(450).hex()} for i in range(1500)]
        + [{"_id": f"s{i:05d}", "pad": os.urandom(450).hex()} for i in range(1500)]
        + [{"_id": ObjectId(), "pad": os.urandom(450).hex()} for _ in range(1500)]
    )
    seed_raw(mongo.client, f"{app}.mixed", docs)
    source = raw_by_id(mongo.client, f"{app}.mixed")
    spec = bspec("resume", databases=[app], chunk_kib=256)
    from davit.adapters.repository.tuning import Tuning

    tiny = Tuning(pack_size=300 << 10, checkpoint_seconds=60)
    ctx = MemoryRunContext(run_id="snap1", stop_after_checkpoints=3)
    with pytest.raises(RunStopped):
        run_backup(repo, spec, "snap1", ctx=ctx, tuning=tiny)
    assert not repo.snapshot_exists("snap1")
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    _, result = run_backup(repo, spec, "snap1", ctx=ctx, tuning=tiny)
    assert result["documents"] == len(source)
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written)), "a chunk was written twice"
    mongo.client.drop_database(app)
    run_restore(repo, restore_spec("resume-restore", {"snapshot": "snap1"}), "r1")
    assert raw_by_id(mongo.client, f"{app}.mixed") == source


def test_restore_stopped_mid_collection_resumes_and_inserts_nothing_twice(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_raw(mongo.client, f"{app}.big", [{"_id": i, "pad": "z" * 500} for i in range(6000)])
    source = raw_by_id(mongo.client, f"{app}.big")
    run_backup(repo, bspec("rs", databases=[app], chunk_kib=128), "snap1")
    mongo.client.drop_database(app)
    spec = restore_spec("rs-restore", {"job": "rs"}, drop=True)
    ctx = MemoryRunContext(run_id="r1", stop_after_checkpoints=5)
    with pytest.raises(RunStopped):
        run_restore(repo, spec, "r1", ctx=ctx)
    partial = mongo.client[app]["big"].count_documents({})
    assert 0 < partial < 6000
    # the chunk in flight at the stop is redone: its documents are there already
    # as if killed after the last chunk's insert but before its checkpoint
    ctx.cursors[f"restore:{app}.big"] = ctx.checkpoints[-2]["cursor"]
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    work_details = {"snapshot_id": "snap1", "namespaces": [[f"{app}.big", f"{app}.big"]]}
    _, _, summary = run_restore(repo, spec, "r1", ctx=ctx, details=work_details)
    assert summary["documents"] == 6000
    assert raw_by_id(mongo.client, f"{app}.big") == source
    assert ctx.cursors[f"restore:{app}.big"]["duplicates"] > 0


def test_upsert_replaces_existing_documents_by_id(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_raw(mongo.client, f"{app}.c", [{"_id": i, "v": "original"} for i in range(100)])
    source = raw_by_id(mongo.client, f"{app}.c")
    run_backup(repo, bspec("up", databases=[app]), "snap1")
    mongo.client[app]["c"].update_many({}, {"$set": {"v": "changed"}})
    mongo.client[app]["c"].insert_one(RawBSONDocument(encode({"_id": 1000, "v": "extra"})))
    run_restore(repo, restore_spec("up-restore", {"job": "up"}, mode="upsert"), "r1")
    after = raw_by_id(mongo.client, f"{app}.c")
    assert {k: v for k, v in after.items() if k in source} == source
    assert len(after) == 101

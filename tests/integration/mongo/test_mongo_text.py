"""mongo.export to JSON Lines / CSV and mongo.import back, against the real FerretDB peer: query,
sort, skip and limit honoured, a stopped run resumes to the same file, modes insert/upsert/merge."""

from __future__ import annotations

import csv
import datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId, json_util

from adapters.mongo.textio import MongoExportWork, MongoImportWork
from adapters.repository.tuning import Tuning
from domain.errors import RunStopped
from domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.mongo.conftest import Mongo
from tests.integration.mongo.helpers import URI_ENV

pytestmark = pytest.mark.mongo
EVERY_DOC = Tuning(checkpoint_seconds=0.0)
DEFAULT = Tuning()


def export(run_id: str, ctx: MemoryRunContext | None = None, tuning: Tuning = DEFAULT, **fields: Any) -> Path:
    source = {"uri_env": URI_ENV, **fields.pop("source")}
    spec = job_from_dict({"name": "exp", "kind": "mongo.export", "source": source, "output": fields}, "exp.toml")
    work = MongoExportWork(spec, run_id, tuning)
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return Path(fields["path"])


def import_file(path: Path, ctx: MemoryRunContext | None = None, fmt: str = "jsonl", batch_docs: int = 1000,
                **target: Any) -> dict[str, Any]:
    spec = job_from_dict({"name": "imp", "kind": "mongo.import", "batch_docs": batch_docs,
                          "input": {"path": str(path), "format": fmt}, "target": {"uri_env": URI_ENV, **target}},
                         "imp.toml")
    work = MongoImportWork(spec, "r1", Tuning())
    ctx = ctx or MemoryRunContext(run_id="r1")
    work.prepare(ctx)
    work.run(ctx)
    return work.finish(ctx)


def seed(mongo: Mongo) -> str:
    db = mongo.db("txt")
    when = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    mongo.client[db]["orders"].insert_many([
        {"_id": i, "status": "shipped" if i % 3 else "open", "total": i * 1.5, "big": Int64(i << 33),
         "when": when + datetime.timedelta(hours=i), "customer": {"name": f"c{i % 7}", "tier": i % 2},
         "oid": ObjectId(f"{i:024x}")} for i in range(3000)])
    return db


def test_export_jsonl_canonical_honours_query_sort_skip_and_limit_and_imports_back_identical(
        mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    out = export("e1", source={"namespace": f"{db}.orders", "query": '{"status": "shipped"}',
                               "sort": '{"customer.name": -1}', "skip": 5, "limit": 1000},
                 path=str(tmp_path / "orders.jsonl"), json_mode="canonical")
    lines = out.read_text().splitlines()
    expected = list(mongo.client[db]["orders"].find({"status": "shipped"}, sort=[("customer.name", -1), ("_id", 1)],
                                                    skip=5, limit=1000))
    opts = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=False)
    assert [json_util.loads(line, json_options=opts) for line in lines] == expected
    assert '"$numberLong"' in lines[0] and '"$date"' in lines[0]

    result = import_file(out, namespace=f"{db}.copy")
    assert result["documents"] == 1000
    assert list(mongo.client[db]["copy"].find(sort=[("_id", 1)])) == sorted(expected, key=lambda d: d["_id"])


def test_export_csv_writes_the_chosen_fields_as_columns(mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    out = export("e1", source={"namespace": f"{db}.orders", "limit": 3}, path=str(tmp_path / "o.csv"), format="csv",
                 fields=["_id", "status", "customer.name", "missing"])
    rows = list(csv.reader(out.open()))
    assert rows == [["_id", "status", "customer.name", "missing"], ["0", "open", "c0", ""], ["1", "shipped", "c1", ""],
                    ["2", "shipped", "c2", ""]]


def test_export_stopped_mid_file_resumes_to_the_same_file(mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    whole = export("e0", source={"namespace": f"{db}.orders"}, path=str(tmp_path / "whole.jsonl"))
    ctx = MemoryRunContext(run_id="e1", stop_after_checkpoints=700)
    with pytest.raises(RunStopped):
        export("e1", ctx=ctx, tuning=EVERY_DOC, source={"namespace": f"{db}.orders"},
               path=str(tmp_path / "resumed.jsonl"))
    assert (tmp_path / "resumed.jsonl.part").exists() and not (tmp_path / "resumed.jsonl").exists()
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    resumed = export("e1", ctx=ctx, source={"namespace": f"{db}.orders"}, path=str(tmp_path / "resumed.jsonl"))
    assert resumed.read_bytes() == whole.read_bytes()


def test_import_stopped_mid_file_resumes_without_duplicates_and_upsert_and_merge_match_by_field(
        mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    out = export("e0", source={"namespace": f"{db}.orders"}, path=str(tmp_path / "all.jsonl"), json_mode="canonical")
    ctx = MemoryRunContext(run_id="r1", stop_after_checkpoints=2)
    with pytest.raises(RunStopped):
        import_file(out, ctx=ctx, batch_docs=500, namespace=f"{db}.copy")
    # as if killed after the third batch's insert, before its checkpoint: that batch is redone
    mongo.client[db]["copy"].insert_many(list(mongo.client[db]["orders"].find({"_id": {"$gte": 1000, "$lt": 1500}})))
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    result = import_file(out, ctx=ctx, batch_docs=500, namespace=f"{db}.copy")
    assert result == {"input": str(out), "documents": 3000, "duplicates": 500}
    assert mongo.client[db]["copy"].count_documents({}) == 3000

    people = tmp_path / "people.csv"
    people.write_text("email,name,address.city\na@x,Ann,Oslo\nb@x,Bob,Rome\n")
    import_file(people, fmt="csv", namespace=f"{db}.people", mode="upsert", upsert_fields=["email"])
    people.write_text("email,address.city\na@x,Bergen\n")
    import_file(people, fmt="csv", namespace=f"{db}.people", mode="merge", upsert_fields=["email"])
    found = {d["email"]: d for d in mongo.client[db]["people"].find({}, {"_id": 0})}
    assert found == {"a@x": {"email": "a@x", "name": "Ann", "address": {"city": "Bergen"}},
                     "b@x": {"email": "b@x", "name": "Bob", "address": {"city": "Rome"}}}

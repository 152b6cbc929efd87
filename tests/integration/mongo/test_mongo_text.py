"""mongo.export to JSON Lines / CSV and mongo.import back, against the real FerretDB peer: query,
sort, skip and limit honoured, a stopped run resumes to the same file (also when documents were
added meanwhile), modes insert/upsert/merge, typed CSV columns, records without `_id` imported
once across a redone batch, and a bad line named by file, line number and reason."""

from __future__ import annotations

import csv
import datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId, json_util

from davit.adapters.mongo.textexport import MongoExportWork
from davit.adapters.mongo.textimport import BadRecord, MongoImportWork
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.mongo.conftest import Mongo
from tests.integration.mongo.helpers import URI_ENV

pytestmark = pytest.mark.mongo
EVERY_DOC = Tuning(checkpoint_seconds=0.0)
DEFAULT = Tuning()


def export(run_id: str, ctx: MemoryRunContext | None = None, tuning: Tuning = DEFAULT, **fields: Any) -> Path:
    source = {"uri_env": URI_ENV, **fields.pop("source")}
    spec = job_from_dict({"name": "exp", "kind": "mongo.export", "source": source, "output": fields}, "exp.toml")
    work = MongoExportWork(RunInputs(spec, run_id, tuning))
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return Path(fields["path"])


def import_file(
    path: Path,
    ctx: MemoryRunContext | None = None,
    fmt: str = "jsonl",
    batch_docs: int = 1000,
    inp: dict[str, Any] | None = None,
    **target: Any,
) -> dict[str, Any]:
    spec = job_from_dict(
        {
            "name": "imp",
            "kind": "mongo.import",
            "batch_docs": batch_docs,
            "input": {"path": str(path), "format": fmt, **(inp or {})},
            "target": {"uri_env": URI_ENV, **target},
        },
        "imp.toml",
    )
    work = MongoImportWork(RunInputs(spec, "r1", Tuning()))
    ctx = ctx or MemoryRunContext(run_id="r1")
    work.prepare(ctx)
    work.run(ctx)
    return work.finish(ctx)


def seed(mongo: Mongo) -> str:
    db = mongo.db("txt")
    when = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    mongo.client[db]["orders"].insert_many(
        [
            {
                "_id": i,
                "status": "shipped" if i % 3 else "open",
                "total": i * 1.5,
                "big": Int64(i << 33),
                "when": when + datetime.timedelta(hours=i),
                "customer": {"name": f"c{i % 7}", "tier": i % 2},
                "oid": ObjectId(f"{i:024x}"),
            }
            for i in range(3000)
        ]
    )
    return db


def test_export_jsonl_canonical_honours_query_sort_skip_and_limit_and_imports_back_identical(
    mongo: Mongo, tmp_path: Path
) -> None:
    db = seed(mongo)
    out = export(
        "e1",
        source={
            "namespace": f"{db}.orders",
            "query": '{"status": "shipped"}',
            "sort": '{"customer.name": -1}',
            "skip": 5,
            "limit": 1000,
        },
        path=str(tmp_path / "orders.jsonl"),
        json_mode="canonical",
    )
    lines = out.read_text().splitlines()
    expected = list(
        mongo.client[db]["orders"].find({"status": "shipped"}, sort=[("customer.name", -1), ("_id", 1)], skip=5, limit=1000)
    )
    opts = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=False)
    assert [json_util.loads(line, json_options=opts) for line in lines] == expected
    assert '"$numberLong"' in lines[0] and '"$date"' in lines[0]

    result = import_file(out, namespace=f"{db}.copy")
    assert result["documents"] == 1000
    assert list(mongo.client[db]["copy"].find(sort=[("_id", 1)])) == sorted(expected, key=lambda d: d["_id"])


def test_export_csv_writes_the_chosen_fields_as_columns(mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    out = export(
        "e1",
        source={"namespace": f"{db}.orders", "limit": 3},
        path=str(tmp_path / "o.csv"),
        format="csv",
        fields=["_id", "status", "customer.name", "missing"],
    )
    rows = list(csv.reader(out.open()))
    assert rows == [
        ["_id", "status", "customer.name", "missing"],
        ["0", "open", "c0", ""],
        ["1", "shipped", "c1", ""],
        ["2", "shipped", "c2", ""],
    ]


def test_export_stopped_mid_file_resumes_to_the_same_file(mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    whole = export("e0", source={"namespace": f"{db}.orders"}, path=str(tmp_path / "whole.jsonl"))
    ctx = MemoryRunContext(run_id="e1", stop_after_checkpoints=700)
    with pytest.raises(RunStopped):
        export("e1", ctx=ctx, tuning=EVERY_DOC, source={"namespace": f"{db}.orders"}, path=str(tmp_path / "resumed.jsonl"))
    assert (tmp_path / "resumed.jsonl.part").exists() and not (tmp_path / "resumed.jsonl").exists()
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    resumed = export("e1", ctx=ctx, source={"namespace": f"{db}.orders"}, path=str(tmp_path / "resumed.jsonl"))
    assert resumed.read_bytes() == whole.read_bytes()


def test_import_stopped_mid_file_resumes_without_duplicates_and_upsert_and_merge_match_by_field(
    mongo: Mongo, tmp_path: Path
) -> None:
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
    assert found == {
        "a@x": {"email": "a@x", "name": "Ann", "address": {"city": "Bergen"}},
        "b@x": {"email": "b@x", "name": "Bob", "address": {"city": "Rome"}},
    }


def test_export_resumes_after_the_last_sort_key_when_documents_were_added_before_it(mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    orders = mongo.client[db]["orders"]
    source = {"namespace": f"{db}.orders", "sort": '{"total": -1}'}
    ctx = MemoryRunContext(run_id="e1", stop_after_checkpoints=1000)
    with pytest.raises(RunStopped):
        export("e1", ctx=ctx, tuning=EVERY_DOC, source=source, path=str(tmp_path / "o.jsonl"), fields=["status"])
    last = json_util.loads(ctx.cursors["export"]["last"])
    assert last == [2000 * 1.5, 2000] and ctx.cursors["export"]["docs"] == 1000
    # while the run is stopped: 10 documents that sort before the resume point, 1 after it
    orders.insert_many([{"_id": 10_000 + i, "total": 1e9 + i, "status": "new"} for i in range(10)])
    orders.insert_one({"_id": 20_000, "total": -1.0, "status": "late"})
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    out = export("e1", ctx=ctx, source=source, path=str(tmp_path / "o.jsonl"), fields=["status"])
    written = [json_util.loads(line) for line in out.read_text().splitlines()]
    assert [d["_id"] for d in written] == [*range(2999, -1, -1), 20_000]  # nothing shifted or repeated
    assert written[0] == {"_id": 2999, "status": "shipped"}  # the sort key fetched to resume is not written


def test_export_csv_without_header_then_typed_import_restores_the_types(mongo: Mongo, tmp_path: Path) -> None:
    db = seed(mongo)
    fields = ["_id", "status", "total", "big", "when", "customer.name", "oid"]
    out = export(
        "e1",
        source={"namespace": f"{db}.orders", "limit": 50},
        path=str(tmp_path / "o.csv"),
        format="csv",
        fields=fields,
        header=False,
    )
    first = out.read_text().splitlines()[0]
    assert first.startswith("0,open,0.0,0,") and '{""$date"": ""2024-05-01T00:00:00Z""}' in first
    typed = [
        "_id.int32()",
        "status.string()",
        "total.double()",
        "big.auto()",
        "when.auto()",
        "customer.name.string()",
        "oid.auto()",
    ]
    result = import_file(out, fmt="csv", inp={"fields": typed, "columns_have_types": True}, namespace=f"{db}.copy")
    assert result["documents"] == 50
    projection = {"_id": 1, "status": 1, "total": 1, "big": 1, "when": 1, "customer.name": 1, "oid": 1}
    original = list(mongo.client[db]["orders"].find({}, projection, sort=[("_id", 1)], limit=50))
    copied = list(mongo.client[db]["copy"].find({}, sort=[("_id", 1)]))
    assert copied == original
    assert type(copied[3]["big"]) is Int64 and isinstance(copied[3]["oid"], ObjectId)


def test_csv_header_with_types_converts_each_column(mongo: Mongo, tmp_path: Path) -> None:
    db = mongo.db("txt")
    people = tmp_path / "people.csv"
    people.write_text(
        "name.string(),age.int32(),visits.int64(),born.date(2006-01-02),vip.boolean(),"
        "score.double(),photo.binary(hex),zip.string(),note.auto()\n"
        "Ann,41,5000000000,1983-07-14,yes,9.5,ff00,0042,\n"
        'Bob,7,1,2017-01-31,false,-1,,00123,{"k": 1}\n'
    )
    import_file(people, fmt="csv", inp={"columns_have_types": True, "ignore_blanks": True}, namespace=f"{db}.p")
    found = {d["name"]: d for d in mongo.client[db]["p"].find({}, {"_id": 0})}
    assert found["Ann"] == {
        "name": "Ann",
        "age": 41,
        "visits": Int64(5_000_000_000),
        "born": datetime.datetime(1983, 7, 14),
        "vip": True,
        "score": 9.5,
        "photo": b"\xff\x00",
        "zip": "0042",
    }
    assert found["Bob"] == {
        "name": "Bob",
        "age": 7,
        "visits": 1,
        "born": datetime.datetime(2017, 1, 31),
        "vip": False,
        "score": -1.0,
        "zip": "00123",
        "note": {"k": 1},
    }
    assert type(found["Ann"]["visits"]) is Int64 and type(found["Ann"]["age"]) is int


@pytest.mark.parametrize(
    "text, line, reason, before",
    [
        ('{"_id": 1}\n{"_id": 2}\n{"_id": 3, oops}\n{"_id": 4}\n', 3, "not Extended JSON", 2),
        ('{"_id": 1}\n\n[1, 2]\n', 3, "a JSON list, not an object", 1),
        ('{"_id": 1}\n{"_id": 2, "x": "\xff"}\n', 2, "not UTF-8", 1),
    ],
    ids=["bad-json", "not-an-object", "not-utf8"],
)
def test_a_bad_json_line_fails_the_import_naming_file_line_and_reason(
    mongo: Mongo, tmp_path: Path, text: str, line: int, reason: str, before: int
) -> None:
    db = mongo.db("txt")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(BadRecord) as err:
        import_file(path, batch_docs=1, namespace=f"{db}.bad")
    assert not err.value.retryable
    assert str(err.value).startswith(f"{path}: line {line}: {reason}")
    assert mongo.client[db]["bad"].count_documents({}) == before  # the records before it are in


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("n.int32(),s.string()\n1,a\n2,b\nthree,c\n", 4, "column n: 'three' is not an integer"),
        ('n.int32(),s.string()\n1,a\n"2\nstill two",b,extra\n', 3, "3 values for 2 columns"),
        ("n.int32(),when.date(2006-01-02)\n1,2024-02-30\n", 2, "column when: '2024-02-30' does not match"),
        ("n.int32(),s.str()\n1,a\n", 1, "column names: column 's.str()': unknown type 'str'"),
    ],
    ids=["bad-int", "column-count-after-multiline-value", "bad-date", "unknown-type"],
)
def test_a_bad_csv_row_fails_the_import_naming_file_line_and_reason(
    mongo: Mongo, tmp_path: Path, text: str, line: int, reason: str
) -> None:
    db = mongo.db("txt")
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(BadRecord) as err:
        import_file(path, fmt="csv", inp={"columns_have_types": True}, namespace=f"{db}.bad")
    assert str(err.value).startswith(f"{path}: line {line}: {reason}"), str(err.value)


def test_records_without_id_are_imported_once_when_batches_are_redone(mongo: Mongo, tmp_path: Path) -> None:
    db = mongo.db("txt")
    path = tmp_path / "events.jsonl"
    path.write_text("".join(f'{{"n": {i}, "what": "event {i}"}}\n' for i in range(1000)))
    ctx = MemoryRunContext(run_id="r1")
    first = import_file(path, ctx=ctx, batch_docs=100, namespace=f"{db}.events")
    assert first["documents"] == 1000 and first["duplicates"] == 0
    # as if killed after every batch past the third was written but before its checkpoint
    ctx.cursors["import"] = next(c["cursor"] for c in ctx.checkpoints if c["cursor"]["docs"] == 300)
    ctx.done.clear()
    again = import_file(path, ctx=ctx, batch_docs=100, namespace=f"{db}.events")
    assert again["duplicates"] == 700
    events = mongo.client[db]["events"]
    assert events.count_documents({}) == 1000
    assert sorted(d["n"] for d in events.find({}, {"n": 1})) == list(range(1000))


def test_import_refused_by_the_server_names_the_line(mongo: Mongo, tmp_path: Path) -> None:
    db = mongo.db("txt")
    path = tmp_path / "u.jsonl"  # FerretDB 1.24 refuses nested arrays
    path.write_text('{"_id": 1, "v": [1]}\n{"_id": 2, "v": [2]}\n{"_id": 3, "v": [[3]]}\n')
    with pytest.raises(BadRecord) as err:
        import_file(path, namespace=f"{db}.u")
    assert str(err.value).startswith(f"{path}: line 3: refused by {db}.u: invalid value"), str(err.value)
    assert mongo.client[db]["u"].count_documents({}) == 2

"""mongo.export and mongo.import as an operator runs them: job files dropped into the jobs
directory of a running davitd. An export to CSV with a query, sort and chosen fields, then an
import of that file with typed columns into another database, merging into what is there; and
an import whose file has a bad line fails with the file and the line number in `davit show`."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.e2e.conftest import Davit, write_job
from tests.peers.state import MongoPeer

pytestmark = [pytest.mark.e2e, pytest.mark.mongo]


@pytest.fixture
def shop(mongo_peer: MongoPeer) -> Iterator[tuple[MongoClient[Any], str, str]]:
    """(client, source database, target database) with 500 orders in the source."""
    client: MongoClient[Any] = MongoClient(mongo_peer.uri, serverSelectionTimeoutMS=10_000)
    src, dst = f"shop_{uuid.uuid4().hex[:8]}", f"copy_{uuid.uuid4().hex[:8]}"
    when = datetime.datetime(2024, 5, 1)
    client[src]["orders"].insert_many(
        [
            {
                "_id": i,
                "status": "shipped" if i % 2 else "open",
                "total": i * 2.5,
                "placed": when + datetime.timedelta(days=i),
                "customer": {"name": f"c{i % 9}", "city": "Oslo"},
            }
            for i in range(500)
        ]
    )
    client[dst]["orders"].insert_many(
        [{"_id": 499, "status": "lost", "note": "kept by merge"}, {"_id": 1, "status": "other", "note": "untouched"}]
    )
    yield client, src, dst
    client.drop_database(src)
    client.drop_database(dst)
    client.close()


def test_export_to_csv_then_typed_import_merges_into_another_database(
    davit: Davit, shop: tuple[MongoClient[Any], str, str], mongo_peer: MongoPeer, tmp_path: Path
) -> None:
    client, src, dst = shop
    uri = tmp_path / "mongo.uri"
    uri.write_text(mongo_peer.uri)
    out = tmp_path / "shipped.csv"
    davit.start()
    write_job(
        davit,
        "export.toml",
        f'''name = "shipped-export"
kind = "mongo.export"
[source]
uri_file = "{uri}"
namespace = "{src}.orders"
query = '{{"status": "shipped"}}'
sort = '{{"total": -1}}'
limit = 100
[output]
path = "{out}"
format = "csv"
fields = ["_id", "status", "total", "placed", "customer.name"]
header = false
''',
    )
    run = davit.wait_run_state("shipped-export", {"succeeded", "failed"}, timeout=120)
    assert run["state"] == "succeeded", run
    lines = out.read_text().splitlines()
    assert len(lines) == 100 and lines[0].startswith("499,shipped,1247.5,") and lines[-1].startswith("301,")
    assert not Path(str(out) + ".part").exists()

    write_job(
        davit,
        "import.toml",
        f'''name = "shipped-import"
kind = "mongo.import"
batch_docs = 30
[input]
path = "{out}"
format = "csv"
columns_have_types = true
fields = ["_id.int32()", "status.string()", "total.double()", "placed.auto()", "customer.name.string()"]
[target]
uri_file = "{uri}"
namespace = "{dst}.orders"
mode = "merge"
''',
    )
    run = davit.wait_run_state("shipped-import", {"succeeded", "failed"}, timeout=120)
    assert run["state"] == "succeeded", run
    copied = {d["_id"]: d for d in client[dst]["orders"].find()}
    assert sorted(copied) == [1, *range(301, 500, 2)]
    for i in range(301, 500, 2):
        expected = {
            "_id": i,
            "status": "shipped",
            "total": i * 2.5,
            "placed": datetime.datetime(2024, 5, 1) + datetime.timedelta(days=i),
            "customer": {"name": f"c{i % 9}"},
        }
        assert copied[i] == (expected if i != 499 else {**expected, "note": "kept by merge"})
    assert copied[1] == {"_id": 1, "status": "other", "note": "untouched"}


def test_an_import_with_a_bad_line_fails_naming_the_file_and_line(
    davit: Davit, shop: tuple[MongoClient[Any], str, str], mongo_peer: MongoPeer, tmp_path: Path
) -> None:
    client, _src, dst = shop
    uri = tmp_path / "mongo.uri"
    uri.write_text(mongo_peer.uri)
    data = tmp_path / "people.jsonl"
    data.write_text('{"_id": "a", "n": 1}\n{"_id": "b", "n": 2}\n{"_id": "c", "n": 3,}\n')
    davit.start()
    write_job(
        davit,
        "people.toml",
        f'name = "people"\nkind = "mongo.import"\nbatch_docs = 1\n[input]\n'
        f'path = "{data}"\n[target]\nuri_file = "{uri}"\nnamespace = "{dst}.people"\n',
    )
    run = davit.wait_run_state("people", {"succeeded", "failed"}, timeout=120)
    assert run["state"] == "failed", run
    shown = davit.cli("show", run["run_id"], check=False).stdout
    assert f"{data}: line 3: not Extended JSON" in shown, shown
    assert "BadRecord" in str(davit.history(run["run_id"]))
    assert client[dst]["people"].count_documents({}) == 2

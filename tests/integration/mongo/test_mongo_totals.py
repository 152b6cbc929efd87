"""A mongo.backup tells each collection's total before dumping it (its progress bar's 100%):
its documents, from the server's collection statistics, against the real peer."""

from __future__ import annotations

import pytest
from bson import ObjectId

from davit.adapters.mongo.backup import DUMP
from davit.adapters.repository.repository import Repository
from tests.integration.mongo.conftest import Mongo
from tests.integration.mongo.helpers import backup_spec, run_backup, seed_raw

pytestmark = pytest.mark.mongo


def test_each_collections_dump_knows_its_document_count_up_front(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_raw(mongo.client, f"{app}.users", [{"_id": ObjectId(), "name": f"u{i}", "n": i} for i in range(3000)])
    seed_raw(mongo.client, f"{app}.small", [{"_id": i} for i in range(7)])
    ctx, _ = run_backup(repo, backup_spec("totals", databases=[app], chunk_kib=64), "snap1")
    users, small = ctx.totals[f"{DUMP}{app}.users"], ctx.totals[f"{DUMP}{app}.small"]
    # documents only: FerretDB's `size` is its storage's, not the BSON bytes the dump counts
    assert users == (None, 3000) and small == (None, 7)


def test_a_dump_with_a_query_has_no_total(mongo: Mongo, repo: Repository) -> None:
    app = mongo.db("app")
    seed_raw(mongo.client, f"{app}.users", [{"_id": i, "n": i} for i in range(100)])
    spec = backup_spec("some", databases=[app], query={f"{app}.users": '{"n": {"$lt": 10}}'})
    ctx, _ = run_backup(repo, spec, "snap1")
    assert f"{DUMP}{app}.users" not in ctx.totals

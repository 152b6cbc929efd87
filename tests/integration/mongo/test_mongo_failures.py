"""Failures of the MongoDB adapter are classified and never show the URI's password: a server
that is down is retryable, refused credentials (no such user, or a wrong password for a user
that exists) are permanent, and a document type the target cannot store (FerretDB closes the
connection) fails after bounded retries naming the collection; an upsert that breaks a unique
index of the target fails permanently naming the collection and the index, not the values, and so
does an insert (a duplicate `_id` of a redone chunk is tolerated, a duplicate on another unique index is not)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Decimal128, json_util

from davit.adapters.mongo.client import MongoAuthFailed, MongoConflict, MongoUnreachable
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError, RetryableError
from tests.fakes import MemoryRunContext
from tests.integration.mongo.conftest import AuthServer, Mongo
from tests.integration.mongo.helpers import URI_ENV, restore_spec, run_backup, run_restore
from tests.integration.mongo.helpers import backup_spec as bspec

pytestmark = pytest.mark.mongo
PASSWORD = "Sup3r-s3cret-pw"


def people_dump(root: Path, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A mongodump directory of `db.people` holding `docs` and Ada (_id 7); its documents."""
    docs = [*docs, {"_id": 7, "email": "ada@example.org"}]
    (root / db).mkdir(parents=True)
    (root / db / "people.bson").write_bytes(b"".join(bson.encode(d) for d in docs))
    (root / db / "people.metadata.json").write_text(
        json_util.dumps(
            {"options": {}, "indexes": [], "collectionName": "people", "type": "collection"},
            json_options=json_util.CANONICAL_JSON_OPTIONS,
        )
    )
    return docs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_is_down_is_a_retryable_failure_without_the_password(
    mongo: Mongo, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URI_ENV, f"mongodb://davit:{PASSWORD}@127.0.0.1:{free_port()}/?authSource=admin")
    with pytest.raises(RetryableError) as err:
        run_backup(repo, bspec("down", databases=["app"]), "snap1")
    assert isinstance(err.value, MongoUnreachable)
    assert "server unreachable while connecting" in str(err.value)
    assert PASSWORD not in str(err.value) and "davit:" not in str(err.value)


def test_refused_credentials_fail_permanently_with_a_clear_message_without_the_password(
    mongo: Mongo, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FerretDB's SQLite handler has no users: any login is refused with AuthenticationFailed.
    monkeypatch.setenv(URI_ENV, mongo.uri.replace("mongodb://", f"mongodb://davit:{PASSWORD}@"))
    with pytest.raises(MongoAuthFailed) as err:
        run_backup(repo, bspec("auth", databases=["app"]), "snap1")
    assert not err.value.retryable
    assert "authentication failed" in str(err.value) and PASSWORD not in str(err.value)


def test_a_wrong_password_for_an_existing_user_fails_permanently_naming_the_job_without_the_password(
    mongo_auth: AuthServer, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(mongo_auth.uri(mongo_auth.password), serverSelectionTimeoutMS=10_000)
    db = f"authed_{uuid.uuid4().hex[:8]}"
    client[db]["items"].insert_one({"_id": 1})
    try:
        monkeypatch.setenv(URI_ENV, mongo_auth.uri(mongo_auth.password))  # the user exists: this one works
        _ctx, details = run_backup(repo, bspec("authed", databases=[db]), "snap1")
        assert details["documents"] == 1

        wrong = "Wr0ng-" + PASSWORD
        monkeypatch.setenv(URI_ENV, mongo_auth.uri(wrong))
        ctx = MemoryRunContext(run_id="snap2")
        with pytest.raises(MongoAuthFailed) as err:
            run_backup(repo, bspec("authed", databases=[db]), "snap2", ctx=ctx)
        assert not err.value.retryable
        message = str(err.value)
        assert message.startswith(
            "mongo.backup authed: authentication failed while connecting (check the user and password in the URI)"
        ), message
        everything = message + repr(err.value) + str(err.value.__cause__) + str(ctx.checkpoints) + str(ctx.warnings)
        assert wrong not in everything and mongo_auth.password not in everything
        assert not ctx.checkpoints  # it failed before any work
    finally:
        client.drop_database(db)
        client.close()


def test_a_document_the_target_cannot_store_fails_after_bounded_retries_naming_the_collection(
    mongo: Mongo, repo: Repository, tmp_path: Path
) -> None:
    db = mongo.db("legacy")
    (tmp_path / "dump" / db).mkdir(parents=True)
    docs = [{"_id": 1, "price": 1.5}, {"_id": 2, "price": Decimal128("9.99")}]
    (tmp_path / "dump" / db / "prices.bson").write_bytes(b"".join(bson.encode(d) for d in docs))
    (tmp_path / "dump" / db / "prices.metadata.json").write_text(
        json_util.dumps(
            {"options": {}, "indexes": [], "collectionName": "prices", "type": "collection"},
            json_options=json_util.CANONICAL_JSON_OPTIONS,
        )
    )
    ctx = MemoryRunContext(run_id="r1")
    with pytest.raises(PermanentError) as err:
        run_restore(repo, restore_spec("dec", {"from_mongodump": str(tmp_path / "dump")}), "r1", ctx=ctx)
    assert not err.value.retryable
    assert f"{db}.prices" in str(err.value) and "3 attempts" in str(err.value)
    assert mongo.client.admin.command("ping")["ok"] == 1  # the server is fine afterwards


@pytest.mark.parametrize("held_by", ["a new document", "an existing document"])
def test_an_upsert_that_breaks_a_unique_index_of_the_target_fails_naming_the_collection_and_index(
    mongo: Mongo, repo: Repository, tmp_path: Path, held_by: str
) -> None:
    db = mongo.db("people")
    people_dump(tmp_path / "dump", db, [{"_id": n, "email": f"user{n}@example.org"} for n in range(5)])
    # the target already has Ada under another _id, and a unique index on email
    target = mongo.client[db]["people"]
    target.insert_one({"_id": 99, "email": "ada@example.org"})
    if held_by == "an existing document":  # the replacement of _id 7 is what breaks the index
        target.insert_one({"_id": 7, "email": "old@example.org"})
    target.create_index("email", unique=True, name="email_1")

    with pytest.raises(MongoConflict) as err:
        run_restore(repo, restore_spec("up", {"from_mongodump": str(tmp_path / "dump")}, mode="upsert"), "r1")
    assert not err.value.retryable
    assert str(err.value).startswith(
        f"{db}.people: upsert refused by the target's unique index email_1: a "
        "document of the source holds a value that another document of the target"
    )
    assert "ada@example.org" not in str(err.value)  # the server's message quotes the values: left out
    assert target.find_one({"_id": 99}) == {"_id": 99, "email": "ada@example.org"}


def test_an_insert_that_breaks_a_unique_index_of_the_target_fails_while_documents_already_there_are_tolerated(
    mongo: Mongo, repo: Repository, tmp_path: Path
) -> None:
    db = mongo.db("members")
    docs = people_dump(tmp_path / "dump", db, [{"_id": n, "email": f"user{n}@example.org"} for n in range(6)])
    target = mongo.client[db]["people"]
    target.create_index("email", unique=True, name="email_1")
    spec = restore_spec("in", {"from_mongodump": str(tmp_path / "dump")}, mode="insert")

    # documents of the source already in the target (a redone chunk) are duplicates of their _id: fine
    target.insert_many([docs[1], docs[4]])
    _ctx, _details, summary = run_restore(repo, spec, "r1")
    assert summary["documents"] == 7 and target.count_documents({}) == 7

    # Ada is in the target under another _id: her document cannot be restored, and the run says so
    target.delete_one({"_id": 7})
    target.insert_one({"_id": 99, "email": "ada@example.org"})
    with pytest.raises(MongoConflict) as err:
        run_restore(repo, spec, "r2")
    assert not err.value.retryable
    assert str(err.value).startswith(
        f"{db}.people: insert refused by the target's unique index email_1: a "
        "document of the source holds a value that another document of the target"
    )
    assert "ada@example.org" not in str(err.value)
    assert target.find_one({"_id": 7}) is None

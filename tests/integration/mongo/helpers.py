"""Shared pieces of the MongoDB adapter tests: a dataset with every BSON type FerretDB stores,
raw reads keyed by `_id`, driving the backup and restore works without a daemon, and the
peer's instance with authentication on."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import Binary, Int64, ObjectId, Regex, Timestamp, encode, json_util
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from davit.adapters.mongo.backup import MongoBackupWork
from davit.adapters.mongo.restore import MongoRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.peers.state import MongoPeer, load


@dataclass(frozen=True)
class AuthServer:
    """The FerretDB instance with authentication on: its port and its one user."""

    port: int
    user: str
    password: str

    def uri(self, password: str) -> str:
        return f"mongodb://{self.user}:{password}@127.0.0.1:{self.port}/?authSource=admin"


def auth_server(peer: MongoPeer) -> AuthServer:
    """`peer` is up, so its entry has the auth instance too (the peer's check asks both)."""
    entry = load()["mongo"]
    return AuthServer(int(entry["auth_port"]), entry["auth_user"], Path(entry["auth_password_file"]).read_text())


SMALL = Tuning(pack_size=2 << 20, checkpoint_seconds=60)
URI_ENV = "DAVIT_TEST_MONGO_URI"


def every_type_docs() -> list[dict[str, Any]]:
    """Documents using each BSON type FerretDB 1.24 stores (no decimal128, no nested arrays)."""
    when = datetime.datetime(2024, 2, 29, 12, 30, 45, 123000, tzinfo=datetime.UTC)
    docs: list[dict[str, Any]] = [
        {
            "_id": ObjectId("65f000000000000000000001"),
            "int32": 7,
            "int64": Int64(1 << 40),
            "double": 3.25,
            "neg": -12,
            "big": Int64(-(1 << 62)),
            "tiny": 1e-300,
            "when": when,
            "yes": True,
            "no": False,
            "nothing": None,
            "text": "plain ascii",
        },
        {
            "_id": ObjectId("65f000000000000000000002"),
            "bin0": Binary(b"\x00\x01\xff", 0),
            "bin2": Binary(b"old binary", 2),
            "uuid3": Binary(uuid.UUID(int=3).bytes, 3),
            "uuid4": Binary(uuid.UUID(int=4).bytes, 4),
            "md5": Binary(b"0123456789abcdef", 5),
            "user": Binary(b"custom", 0x80),
        },
        {
            "_id": ObjectId("65f000000000000000000003"),
            "nested": {"a": {"b": {"c": {"d": "deep", "n": 1}}}, "list": [{"x": 1}, {"y": [1, 2, 3]}]},
            "array": [1, "two", 3.0, None, True, {"k": "v"}, Int64(5)],
            "empty_doc": {},
            "empty_arr": [],
        },
        {
            "_id": ObjectId("65f000000000000000000004"),
            "ключ": "значение",
            "鍵": "値 🚢",
            "emoji 🪝": "davit ⚓",
            "mixed": "äöü ß ÿ €",
        },
        {"_id": ObjectId("65f000000000000000000005"), "regex": Regex("^da+vit$", "i"), "ts": Timestamp(1700000000, 7)},
        {"_id": 42, "kind": "int id"},
        {"_id": Int64(1 << 50), "kind": "long id"},
        {"_id": "string-id", "kind": "string id"},
        {"_id": {"composite": 1, "part": "b"}, "kind": "document id"},
        {"_id": ObjectId("65f000000000000000000006"), "blob": "x" * 1_000_000, "n": 1},  # near 1 MB
        {"_id": ObjectId("65f000000000000000000007"), "blob": Binary(bytes(range(256)) * 3900), "n": 2},
    ]
    return docs


def raw_by_id(client: MongoClient[Any], ns: str) -> dict[str, bytes]:
    """Every document of `ns` as raw BSON, keyed by its `_id` in canonical Extended JSON."""
    db, coll = ns.split(".", 1)
    out: dict[str, bytes] = {}
    for batch in client[db][coll].find_raw_batches(sort=[("_id", 1)]):
        pos = 0
        while pos < len(batch):
            size = int.from_bytes(batch[pos : pos + 4], "little")
            doc = batch[pos : pos + size]
            key = json_util.dumps(RawBSONDocument(doc)["_id"], json_options=json_util.CANONICAL_JSON_OPTIONS)
            assert key not in out, f"duplicate _id {key} in {ns}"
            out[key] = doc
            pos += size
    return out


def seed_raw(client: MongoClient[Any], ns: str, docs: list[dict[str, Any]]) -> None:
    db, coll = ns.split(".", 1)
    client[db][coll].insert_many([RawBSONDocument(encode(d)) for d in docs], ordered=True)


def backup_spec(name: str, **source: Any) -> Any:
    extra = {k: source.pop(k) for k in ("parallel", "chunk_kib", "retention") if k in source}
    return job_from_dict(
        {"name": name, "kind": "mongo.backup", "source": {"uri_env": URI_ENV, **source}, **extra}, f"{name}.toml"
    )


def restore_spec(name: str, source: dict[str, Any], **target: Any) -> Any:
    extra = {k: target.pop(k) for k in ("parallel", "batch_kib") if k in target}
    return job_from_dict(
        {"name": name, "kind": "mongo.restore", "source": source, "target": {"uri_env": URI_ENV, **target}, **extra},
        f"{name}.toml",
    )


def run_backup(
    repo: Repository, spec: Any, run_id: str, ctx: MemoryRunContext | None = None, tuning: Tuning = SMALL
) -> tuple[MemoryRunContext, dict[str, Any]]:
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work = MongoBackupWork(RunInputs(spec, run_id, tuning, repo=repo))
    details = work.prepare(ctx)
    work.run(ctx)
    return ctx, {**details, **work.finish(ctx)}


def run_restore(
    repo: Repository, spec: Any, run_id: str, ctx: MemoryRunContext | None = None, details: dict[str, Any] | None = None
) -> tuple[MemoryRunContext, dict[str, Any], dict[str, Any]]:
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work = MongoRestoreWork(RunInputs(spec, run_id, SMALL, details or {}, repo=repo))
    if details is None:
        details = work.prepare(ctx)
    work.run(ctx)
    return ctx, details, work.finish(ctx)


def open_repo(path: Path) -> Repository:
    return Repository.open(path)

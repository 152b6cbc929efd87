"""Helpers for the Weaviate adapter's tests: a client on the peer, job specs pointed at it,
runs driven like the executor drives them, and a comparable dump of a collection."""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import weaviate
from weaviate.classes.query import QueryReference
from weaviate.client import WeaviateClient

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.adapters.weaviate.backup import WeaviateBackupWork
from davit.adapters.weaviate.clear import WeaviateClearWork
from davit.adapters.weaviate.reader import reference_properties
from davit.adapters.weaviate.restore import WeaviateRestoreWork
from davit.adapters.weaviate.schema import multi_target_properties
from davit.domain.jobs import WeaviateBackupJob, WeaviateClearJob, WeaviateRestoreJob
from davit.domain.ports import JobWork
from tests.fakes import MemoryRunContext
from tests.peers.state import WeaviatePeer

TUNING = Tuning(pack_size=1 << 20, checkpoint_seconds=60)


def prefix() -> str:
    return f"T{uuid.uuid4().hex[:8]}"


@contextmanager
def connect(peer: WeaviatePeer) -> Iterator[WeaviateClient]:
    client = weaviate.connect_to_custom(
        http_host=peer.host,
        http_port=peer.http_port,
        http_secure=False,
        grpc_host=peer.host,
        grpc_port=peer.grpc_port,
        grpc_secure=False,
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(name="client")
def client_fixture(weaviate_peer: WeaviatePeer) -> Iterator[WeaviateClient]:
    """The `client` fixture (a client on the Weaviate peer for one test); a test module imports it to use it."""
    with connect(weaviate_peer) as c:
        yield c


def conn(peer: WeaviatePeer) -> dict[str, Any]:
    return {"host": peer.host, "http_port": peer.http_port, "grpc_port": peer.grpc_port}


def backup_spec(
    peer: WeaviatePeer, name: str = "wv-backup", retention: dict[str, int] | None = None, **source: Any
) -> WeaviateBackupJob:
    return WeaviateBackupJob.model_validate(
        {"name": name, "kind": "weaviate.backup", "source": {**conn(peer), **source}, "retention": retention or {}}
    )


def restore_spec(peer: WeaviatePeer, job: str = "wv-backup", **target: Any) -> WeaviateRestoreJob:
    return WeaviateRestoreJob.model_validate(
        {"name": "wv-restore", "kind": "weaviate.restore", "source": {"job": job}, "target": {**conn(peer), **target}}
    )


def clear_spec(peer: WeaviatePeer, collection: str) -> WeaviateClearJob:
    return WeaviateClearJob.model_validate(
        {"name": "wv-clear", "kind": "weaviate.clear", "confirm": True, "target": {**conn(peer), "collection": collection}}
    )


def drive(work: JobWork, ctx: MemoryRunContext, details: dict[str, Any]) -> dict[str, Any]:
    """prepare (first attempt only, as the executor does), run, finish; the details recorded."""
    if not details:
        details.update(work.prepare(ctx))
    work.run(ctx)
    work.finish(ctx)
    return details


def run_work(
    work_class: Any, repo: Repository, spec: Any, run_id: str, ctx: MemoryRunContext | None, details: dict[str, Any] | None
) -> MemoryRunContext:
    """Prepare (unless `details` already hold what a prepare recorded), run and finish one work."""
    details = {} if details is None else details
    ctx = ctx or MemoryRunContext(run_id=run_id)
    if not details:
        details.update(work_class(RunInputs(spec, run_id, TUNING, repo=repo)).prepare(ctx))
    drive(work_class(RunInputs(spec, run_id, TUNING, dict(details), repo=repo)), ctx, details)
    return ctx


def run_backup(
    repo: Repository,
    spec: WeaviateBackupJob,
    run_id: str,
    ctx: MemoryRunContext | None = None,
    details: dict[str, Any] | None = None,
) -> str:
    run_work(WeaviateBackupWork, repo, spec, run_id, ctx, details)
    return run_id


def run_restore(
    repo: Repository,
    spec: WeaviateRestoreJob,
    run_id: str = "restore1",
    ctx: MemoryRunContext | None = None,
    details: dict[str, Any] | None = None,
) -> MemoryRunContext:
    return run_work(WeaviateRestoreWork, repo, spec, run_id, ctx, details)


def run_clear(spec: WeaviateClearJob, ctx: MemoryRunContext | None = None) -> MemoryRunContext:
    ctx = ctx or MemoryRunContext(run_id="clear1")
    details: dict[str, Any] = {}
    drive(WeaviateClearWork(RunInputs(spec, "clear1", details=details)), ctx, details)
    return ctx


def f32(vector: Any) -> Any:
    """A vector (or multi-vector) as float32 values, for exact comparison."""
    if vector and isinstance(vector[0], list):
        return [array("f", v).tobytes() for v in vector]
    return array("f", vector).tobytes()


def dump(client: WeaviateClient, name: str, tenant: str | None = None) -> dict[str, dict[str, Any]]:
    """Every object of a collection by uuid: properties, float32 vectors, reference uuids."""
    collection = client.collections.get(name)
    config = collection.config.get().to_dict()
    if tenant is not None:
        collection = collection.with_tenant(tenant)
    refs = reference_properties(config)
    props = [p["name"] for p in config["properties"] if p["name"] not in refs]
    multi = multi_target_properties(config)  # gRPC cannot return these: see `ordered_references`
    out = {}
    for obj in collection.iterator(
        include_vector=True,
        return_properties=props,
        return_references=[QueryReference(link_on=r, return_properties=[]) for r in refs if r not in multi] or None,
    ):
        out[str(obj.uuid)] = {
            "properties": {k: v for k, v in obj.properties.items() if v is not None},
            "vectors": {k: f32(v) for k, v in obj.vector.items()},
            "refs": {k: sorted((o.collection, str(o.uuid)) for o in v.objects) for k, v in (obj.references or {}).items()},
        }
    return out


def ordered_references(peer: WeaviatePeer, name: str, prop: str) -> dict[str, list[tuple[str, str]]]:
    """Each object's `prop` targets as (collection, uuid), in the order the server stores them
    (read over REST, independently of the adapter)."""
    import json
    import urllib.request

    out: dict[str, list[tuple[str, str]]] = {}
    after = None
    while True:
        query = f"class={name}&limit=100" + (f"&after={after}" if after else "")
        with urllib.request.urlopen(f"http://{peer.host}:{peer.http_port}/v1/objects?{query}") as response:
            objects = json.load(response).get("objects") or []
        if not objects:
            return out
        for obj in objects:
            beacons = [r["beacon"].split("/") for r in (obj.get("properties") or {}).get(prop) or []]
            out[obj["id"]] = [(b[-2], b[-1]) for b in beacons]
        after = objects[-1]["id"]


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    out.pop("class", None)
    return out


def open_repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo")

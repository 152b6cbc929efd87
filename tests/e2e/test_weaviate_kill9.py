"""`kill -9` of davitd in the middle of a weaviate.backup and of a weaviate.restore of 30,000
objects with 384-dim vectors: after a restart the run completes, the counts match, and no
object or chunk is there twice. Those use a flat vector index; one more restore, of 10,000
objects, runs into Weaviate's default HNSW index, so the index most servers use is rebuilt
through a kill once.

The sizes only have to put the kill well inside the run: a restore records a checkpoint per
chunk (`chunk_objects`) and is killed after 3 of them, the backup one every 0.2 s and is killed
after 4; each test asserts the kill landed while the run was running."""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property
from weaviate.client import WeaviateClient

from davit.adapters.repository.repository import Repository
from davit.adapters.weaviate import tree
from tests.e2e.conftest import Davit, write_job
from tests.peers.state import WeaviatePeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.weaviate]

OBJECTS, DIMS = 30_000, 384
HNSW_OBJECTS = 10_000
CONFIG = "[data_path]\npack_size_mib = 8\ncheckpoint_seconds = 0.2\n"


def connect(peer: WeaviatePeer) -> WeaviateClient:
    return weaviate.connect_to_custom(
        http_host=peer.host,
        http_port=peer.http_port,
        http_secure=False,
        grpc_host=peer.host,
        grpc_port=peer.grpc_port,
        grpc_secure=False,
    )


def seed(client: WeaviateClient, name: str, count: int, dims: int, hnsw: bool = False) -> set[str]:
    """`count` objects with a random `dims`-dim vector each, imported with batch.fixed_size.

    The vector index is flat unless `hnsw`: an HNSW graph of 100,000 vectors takes this 2-core
    machine minutes to build at each import (bench/weaviate.py uses HNSW)."""
    rnd = random.Random(11)
    index = Configure.VectorIndex.hnsw() if hnsw else Configure.VectorIndex.flat()
    coll = client.collections.create(
        name,
        properties=[Property(name="title", data_type=DataType.TEXT), Property(name="n", data_type=DataType.INT)],
        vector_config=Configure.Vectors.self_provided(vector_index_config=index),
    )
    ids = set()
    with coll.batch.fixed_size(batch_size=200, concurrent_requests=2) as batch:
        for i in range(count):
            uid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            ids.add(uid)
            batch.add_object({"title": f"object {i}", "n": i}, uuid=uid, vector=[rnd.random() - 0.5 for _ in range(dims)])
    assert not coll.batch.failed_objects
    return ids


def seeded_collection(peer: WeaviatePeer, suffix: str, count: int, hnsw: bool = False) -> Iterator[dict[str, Any]]:
    """Seeds a collection of `count` objects, yields its name, ids and peer, then deletes it and its restored copies."""
    client = connect(peer)
    name = f"T{uuid.uuid4().hex[:8]}{suffix}"
    try:
        ids = seed(client, name, count, DIMS, hnsw=hnsw)
        yield {"name": name, "ids": ids, "peer": peer}
    finally:
        for existing in list(client.collections.list_all(simple=True)):
            if existing.startswith(name):
                client.collections.delete(existing)
        client.close()


@pytest.fixture(scope="module")
def big(weaviate_peer: WeaviatePeer) -> Iterator[dict[str, Any]]:
    """One collection of `OBJECTS` objects for the whole module."""
    yield from seeded_collection(weaviate_peer, "Big", OBJECTS)


@pytest.fixture(scope="module")
def hnsw(weaviate_peer: WeaviatePeer) -> Iterator[dict[str, Any]]:
    yield from seeded_collection(weaviate_peer, "Hnsw", HNSW_OBJECTS, hnsw=True)


def conn(peer: WeaviatePeer) -> str:
    return f'host = "{peer.host}"\nhttp_port = {peer.http_port}\ngrpc_port = {peer.grpc_port}\n'


def checkpoints(davit: Davit, run_id: str, step_prefix: str = "") -> list[dict[str, Any]]:
    return [
        e[3]
        for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")
        if e[3]["step"].startswith(step_prefix)
    ]


def kill_after_checkpoints(davit: Davit, job: str, count: int, step_prefix: str) -> str:
    def enough() -> bool:
        runs = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
        return bool(runs) and len(checkpoints(davit, runs[-1][3]["run_id"], step_prefix)) >= count

    davit.wait_for(enough, 300, f"{count} checkpoints of {job}", poll=0.005)
    davit.kill9()
    [queued] = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
    return str(queued[3]["run_id"])


def snapshot_uuids(home: Path, snapshot_id: str) -> list[str]:
    repo = Repository.open(home / "repository", create=False)
    info = repo.resolve(snapshot_id)
    out: list[str] = []
    for line in tree.read_zst(repo.tree_bytes(info)):
        if isinstance(line, tree.ChunkLine):
            table = pq.read_table(io.BytesIO(repo.read_chunk(bytes.fromhex(line.chunk))), columns=["uuid"])
            out.extend(table.column("uuid").to_pylist())
    return out


def backup_job(big: dict[str, Any], chunk_objects: int = 1000) -> str:
    return (
        f'name = "wvbig"\nkind = "weaviate.backup"\n[source]\n{conn(big["peer"])}'
        f'collections = ["{big["name"]}"]\nchunk_objects = {chunk_objects}\n'
    )


def assert_resumed_once(davit: Davit, job: str, run_id: str) -> None:
    run = davit.wait_run_state(job, {"succeeded", "failed"}, timeout=600)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    after = checkpoints(davit, run_id)
    written = [c for cp in after for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"


def kill_mid_run_and_resume(davit: Davit, job: str, kill_after: int, step_prefix: str, items: int) -> str:
    """Kills davitd after `kill_after` `step_prefix` checkpoints of `job`, restarts it, checks the resumed run; returns its id."""
    run_id = kill_after_checkpoints(davit, job, kill_after, step_prefix)
    assert davit.runs(job)[-1]["state"] == "running", f"the kill must land in the middle of {job}'s run"
    davit.start()
    assert_resumed_once(davit, job, run_id)
    done = [cp["items_done"] for cp in checkpoints(davit, run_id, step_prefix)]
    assert done == sorted(done) and done[-1] == items
    return run_id


def restore_killed_mid_run(davit: Davit, seeded: dict[str, Any], objects: int, chunk_objects: int = 1000) -> str:
    """Backs `seeded` up, restores it renamed through a `kill -9` of davitd, checks the resumed run; returns the new name."""
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "wvbig.toml", backup_job(seeded, chunk_objects=chunk_objects))
    assert davit.wait_run_state("wvbig", {"succeeded", "failed"}, timeout=600)["state"] == "succeeded"
    restored = seeded["name"] + "Restored"
    write_job(
        davit,
        "wvback.toml",
        f'name = "wvback"\nkind = "weaviate.restore"\n[source]\njob = "wvbig"\n[target]\n{conn(seeded["peer"])}'
        f'rename = {{ "{seeded["name"]}" = "{restored}" }}\n',
    )
    kill_mid_run_and_resume(davit, "wvback", 3, "objects:", objects)
    return restored


def test_weaviate_backup_killed_mid_run_resumes_and_holds_every_object_once(davit: Davit, big: dict[str, Any]) -> None:
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "wvbig.toml", backup_job(big))
    run_id = kill_mid_run_and_resume(davit, "wvbig", 4, "export:", OBJECTS)
    uuids = snapshot_uuids(davit.home, run_id)
    assert len(uuids) == OBJECTS and set(uuids) == big["ids"]
    assert "0 problems" in davit.cli("verify", run_id).stdout


def test_weaviate_restore_killed_mid_run_resumes_and_counts_match(davit: Davit, big: dict[str, Any]) -> None:
    restored = restore_killed_mid_run(davit, big, OBJECTS)
    client = connect(big["peer"])
    try:
        coll = client.collections.get(restored)
        assert coll.aggregate.over_all(total_count=True).total_count == OBJECTS
        ids = {str(o.uuid) for o in coll.iterator(return_properties=[])}
        assert ids == big["ids"]
    finally:
        client.close()


def test_weaviate_restore_into_an_hnsw_index_killed_mid_run_resumes_and_counts_match(davit: Davit, hnsw: dict[str, Any]) -> None:
    restored = restore_killed_mid_run(davit, hnsw, HNSW_OBJECTS, chunk_objects=250)
    client = connect(hnsw["peer"])
    try:
        coll = client.collections.get(restored)
        assert coll.config.get().to_dict()["vectorConfig"]["default"]["vectorIndexType"] == "hnsw"
        assert coll.aggregate.over_all(total_count=True).total_count == HNSW_OBJECTS
        assert {str(o.uuid) for o in coll.iterator(return_properties=[])} == hnsw["ids"]
        # The graph answers: an object's own vector finds that object first.
        probe = next(iter(coll.query.fetch_objects(limit=1, include_vector=True).objects))
        [nearest] = coll.query.near_vector(probe.vector["default"], limit=1).objects
        assert nearest.uuid == probe.uuid
    finally:
        client.close()

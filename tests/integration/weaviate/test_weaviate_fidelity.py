"""weaviate.backup then weaviate.restore into a dropped server: every configuration, object,
vector and reference comes back equal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from weaviate.client import WeaviateClient

from davit.adapters.weaviate import tree
from tests.integration.weaviate.helpers import (
    backup_spec,
    comparable_config,
    connect,
    dump,
    open_repo,
    prefix,
    restore_spec,
    run_backup,
    run_restore,
)
from tests.integration.weaviate.seed import create_articles, create_authors, create_named, create_tenanted
from tests.peers.state import WeaviatePeer

pytestmark = pytest.mark.weaviate
TENANTS = ("alpha", "beta", "gamma")


@pytest.fixture
def client(weaviate_peer: WeaviatePeer) -> Iterator[WeaviateClient]:
    with connect(weaviate_peer) as c:
        yield c


@pytest.fixture
def seeded(client: WeaviateClient) -> Iterator[dict[str, str]]:
    p = prefix()
    names = {"authors": f"{p}Author", "articles": f"{p}Article", "named": f"{p}Named", "tenanted": f"{p}Tenanted"}
    author_ids = create_authors(client, names["authors"])
    create_articles(client, names["articles"], names["authors"], author_ids)
    create_named(client, names["named"])
    create_tenanted(client, names["tenanted"], TENANTS)
    yield names
    for name in list(client.collections.list_all(simple=True)):
        if name.startswith(p):
            client.collections.delete(name)


def state_of(client: WeaviateClient, names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in names.items():
        config = client.collections.get(name).config.get().to_dict()
        if key == "tenanted":
            objects = {t: dump(client, name, t) for t in TENANTS}
            tenants = sorted(client.collections.get(name).tenants.get())
        else:
            objects, tenants = dump(client, name), []
        out[key] = {"config": comparable_config(config), "objects": objects, "tenants": tenants}
    return out


def test_backup_drop_restore_gives_back_every_config_object_vector_and_reference(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, seeded: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    before = state_of(client, seeded)
    assert len(before["articles"]["objects"]) == 120 and len(before["named"]["objects"]) == 60
    run_backup(repo, backup_spec(weaviate_peer, collections=list(seeded.values())), "snap1")

    info = repo.resolve("snap1")
    lines = list(tree.read_zst(repo.tree_bytes(info)))
    assert info.kind == "weaviate" and info.stats["objects"] == 20 + 120 + 60 + 3 * 30
    assert {line.name for line in lines if isinstance(line, tree.CollectionLine)} == set(seeded.values())

    for name in seeded.values():
        client.collections.delete(name)
    ctx = run_restore(repo, restore_spec(weaviate_peer, job="wv-backup"))

    after = state_of(client, seeded)
    assert not ctx.warnings
    for key in seeded:
        assert after[key]["config"] == before[key]["config"], key
        assert after[key]["tenants"] == before[key]["tenants"], key
        assert after[key]["objects"] == before[key]["objects"], key
    refs = [o["refs"]["writtenBy"] for o in after["articles"]["objects"].values() if o["refs"].get("writtenBy")]
    assert len(refs) == 96  # 4 of every 5 articles point at an author


def test_every_chunk_is_parquet_with_float32_vector_columns(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, seeded: dict[str, str], tmp_path: Path
) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = open_repo(tmp_path)
    run_backup(repo, backup_spec(weaviate_peer, collections=[seeded["named"]]), "snap1")
    chunks = [line for line in tree.read_zst(repo.tree_bytes(repo.resolve("snap1"))) if isinstance(line, tree.ChunkLine)]
    assert chunks
    pf = pq.ParquetFile(io.BytesIO(repo.read_chunk(bytes.fromhex(chunks[0].chunk))))
    schema = pf.schema_arrow
    assert schema.field("v:title_vec").type == pa.list_(pa.float32())
    assert schema.field("mv:colbert").type == pa.list_(pa.list_(pa.float32()))
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"


def test_dates_come_back_with_every_digit_the_server_stored_nanoseconds_and_year_0_included(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, tmp_path: Path
) -> None:
    import uuid

    from weaviate.classes.config import Configure, DataType, Property
    from weaviate.classes.data import DataObject

    name = f"{prefix()}Dated"
    written = [
        "2020-01-02T03:04:05.123456789Z",
        "2021-06-07T08:09:10.5Z",
        "1999-12-31T23:59:59Z",
        "2022-02-03T04:05:06.000000001+02:00",
        "0000-03-04T05:06:07.5Z",
    ]  # year 0: the client reads it as datetime.min
    coll = client.collections.create(
        name,
        properties=[Property(name="at", data_type=DataType.DATE), Property(name="times", data_type=DataType.DATE_ARRAY)],
        vector_config=Configure.Vectors.self_provided(),
    )
    try:
        ids = [str(uuid.uuid4()) for _ in written]
        result = coll.data.insert_many(
            [
                DataObject(properties={"at": at, "times": [at, written[0]]}, uuid=u, vector=[0.5, 0.25])
                for u, at in zip(ids, written, strict=True)
            ]
        )
        assert not result.errors
        before = {u: rest_properties(weaviate_peer, name, u) for u in ids}
        # What the server keeps, read over REST: nanoseconds survive (the client's datetimes would
        # stop at microseconds).
        assert before[ids[0]]["at"] == "2020-01-02T03:04:05.123456789Z"
        assert before[ids[3]]["at"].split(".")[1][:9] == "000000001"

        repo = open_repo(tmp_path)
        run_backup(repo, backup_spec(weaviate_peer, collections=[name]), "snap1")
        client.collections.delete(name)
        run_restore(repo, restore_spec(weaviate_peer, job="wv-backup"))

        assert {u: rest_properties(weaviate_peer, name, u) for u in ids} == before
    finally:
        client.collections.delete(name)


def rest_properties(peer: WeaviatePeer, name: str, uid: str) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{peer.host}:{peer.http_port}/v1/objects/{name}/{uid}") as response:
        properties: dict[str, Any] = json.load(response)["properties"]
        return properties


def test_other_client_reads_in_the_process_still_get_python_floats_and_datetimes(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, seeded: dict[str, str], tmp_path: Path
) -> None:
    from datetime import datetime

    run_backup(open_repo(tmp_path), backup_spec(weaviate_peer, collections=[seeded["articles"]]), "snap1")
    # The backup's decoding adjustments are installed now; a caller of the client sees none.
    objects = client.collections.get(seeded["articles"]).query.fetch_objects(limit=5, include_vector=True).objects
    assert objects and all(type(o.vector["default"]) is list and len(o.vector["default"]) == 16 for o in objects)
    assert all(type(o.properties["date"]) is datetime for o in objects)

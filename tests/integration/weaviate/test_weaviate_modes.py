"""weaviate.restore's modes (rename, merge, fail, replace), resuming, and failed objects;
weaviate.backup's resuming and inactive tenants; weaviate.clear."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from weaviate.classes.data import DataObject
from weaviate.classes.tenants import Tenant, TenantActivityStatus
from weaviate.client import WeaviateClient

from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.adapters.weaviate.restore import OBJECTS, TooManyFailedObjects
from davit.adapters.weaviate.schema import CollectionExists
from davit.domain.errors import InvalidJob, RunStopped, SourceMissing
from davit.domain.jobs import parse_job
from tests.fakes import MemoryRunContext
from tests.integration.weaviate.helpers import (
    backup_spec,
    clear_spec,
    client_fixture,  # noqa: F401 (provides the `client` fixture)
    comparable_config,
    dump,
    open_repo,
    prefix,
    restore_spec,
    run_backup,
    run_clear,
    run_restore,
)
from tests.integration.weaviate.seed import create_articles, create_authors, create_tenanted
from tests.peers.state import WeaviatePeer

pytestmark = pytest.mark.weaviate


@pytest.fixture
def names(client: WeaviateClient) -> Iterator[dict[str, str]]:
    p = prefix()
    out = {"authors": f"{p}Author", "articles": f"{p}Article", "prefix": p}
    create_articles(client, out["articles"], out["authors"], create_authors(client, out["authors"]))
    yield out
    for name in list(client.collections.list_all(simple=True)):
        if name.startswith(p):
            client.collections.delete(name)


def count(client: WeaviateClient, name: str, tenant: str | None = None) -> int:
    coll = client.collections.get(name)
    if tenant is not None:
        coll = coll.with_tenant(tenant)
    return coll.aggregate.over_all(total_count=True).total_count or 0


def backed_up(peer: WeaviatePeer, repo: Repository, names: dict[str, str]) -> None:
    run_backup(repo, backup_spec(peer, collections=[names["authors"], names["articles"]], chunk_objects=25), "snap1")


def test_rename_restores_under_new_names_and_points_references_at_renamed_targets(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    p = names["prefix"]
    # Lower-case first letters: Weaviate capitalises them, and so does davit.
    rename = {names["articles"]: f"{p.lower()}ArticleCopy", names["authors"]: f"{p.lower()}AuthorCopy"}
    run_restore(repo, restore_spec(weaviate_peer, rename=rename))
    article_copy, author_copy = f"{p}ArticleCopy", f"{p}AuthorCopy"
    original, copy = dump(client, names["articles"]), dump(client, article_copy)
    assert {u: o["properties"] for u, o in original.items()} == {u: o["properties"] for u, o in copy.items()}
    assert {u: o["vectors"] for u, o in original.items()} == {u: o["vectors"] for u, o in copy.items()}
    targets = {c for o in copy.values() for c, _ in o["refs"].get("writtenBy", [])}
    assert targets == {author_copy}
    config = client.collections.get(article_copy).config.get().to_dict()
    assert [p["dataType"] for p in config["properties"] if p["name"] == "writtenBy"] == [[author_copy]]
    assert count(client, author_copy) == count(client, names["authors"]) == 20


def test_restore_refuses_an_existing_collection_when_if_exists_is_fail(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    with pytest.raises(CollectionExists, match=names["articles"]):
        run_restore(repo, restore_spec(weaviate_peer, if_exists="fail"))
    assert count(client, names["articles"]) == 120


def test_merge_keeps_objects_not_in_the_snapshot_and_overwrites_those_that_are(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    before = dump(client, names["articles"])
    articles = client.collections.get(names["articles"])
    changed = next(iter(before))
    articles.data.update(uuid=changed, properties={"title": "edited after the backup"})
    extra = articles.data.insert({"title": "only in the server"}, vector=[0.5] * 16)
    run_restore(repo, restore_spec(weaviate_peer, if_exists="merge"))
    after = dump(client, names["articles"])
    assert set(after) == set(before) | {str(extra)}
    assert after[changed] == before[changed]
    assert {u: after[u] for u in before} == before


def test_replace_drops_the_existing_collection_and_recreates_it_from_the_snapshot(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    before = dump(client, names["articles"])
    config = comparable_config(client.collections.get(names["articles"]).config.get().to_dict())
    client.collections.get(names["articles"]).data.insert({"title": "only in the server"}, vector=[0.5] * 16)
    run_restore(repo, restore_spec(weaviate_peer, if_exists="replace"))
    assert dump(client, names["articles"]) == before
    assert comparable_config(client.collections.get(names["articles"]).config.get().to_dict()) == config


def test_a_batch_import_with_an_existing_uuid_overwrites_instead_of_duplicating(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str]
) -> None:
    articles = client.collections.get(names["articles"])
    uid = next(iter(dump(client, names["articles"])))
    result = articles.data.insert_many([DataObject(properties={"title": "again"}, uuid=uid, vector=[0.25] * 16)])
    assert not result.errors
    assert count(client, names["articles"]) == 120
    got = articles.query.fetch_object_by_id(uid)
    assert got is not None and got.properties["title"] == "again" and got.properties["words"] is None


def test_a_resumed_restore_replays_its_chunk_in_flight_without_duplicating(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    before = {n: dump(client, names[n]) for n in ("authors", "articles")}
    for n in ("authors", "articles"):
        client.collections.delete(names[n])
    spec = restore_spec(weaviate_peer)
    ctx = MemoryRunContext(run_id="restore1", stop_after_checkpoints=3)
    details: dict[str, object] = {}
    with pytest.raises(RunStopped):
        run_restore(repo, spec, ctx=ctx, details=details)
    step = OBJECTS + names["articles"]
    assert ctx.cursors[step]["next"] >= 1
    # As after a kill just before the checkpoint: the last chunk done is sent once more.
    ctx.cursors[step] = {**ctx.cursors[step], "next": ctx.cursors[step]["next"] - 1}
    ctx.stop_after_checkpoints = None
    ctx.stop.clear()
    run_restore(repo, spec, ctx=ctx, details=details)
    assert count(client, names["articles"]) == 120
    assert {n: dump(client, names[n]) for n in ("authors", "articles")} == before


def test_a_stopped_backup_resumes_after_its_last_checkpoint_and_the_snapshot_is_whole(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    spec = backup_spec(weaviate_peer, collections=[names["articles"]], chunk_objects=10)
    from davit.adapters.repository.tuning import Tuning
    from davit.adapters.weaviate.backup import WeaviateBackupWork

    tiny = Tuning(pack_size=1 << 20, pack_max_chunks=2, checkpoint_seconds=60)
    ctx = MemoryRunContext(run_id="snap1", stop_after_checkpoints=3)
    details = WeaviateBackupWork(RunInputs(spec, "snap1", tiny, repo=repo)).prepare(ctx)
    with pytest.raises(RunStopped):
        WeaviateBackupWork(RunInputs(spec, "snap1", tiny, details, repo=repo)).run(ctx)
    done_before = ctx.cursors["export:" + names["articles"]]["items"]
    assert 0 < done_before < 120
    ctx.stop_after_checkpoints = None
    ctx.stop.clear()
    work = WeaviateBackupWork(RunInputs(spec, "snap1", tiny, details, repo=repo))
    work.run(ctx)
    assert work.finish(ctx)["objects"] == 120
    client.collections.delete(names["articles"])
    before_authors = count(client, names["authors"])
    run_restore(repo, restore_spec(weaviate_peer, job="wv-backup"))
    assert count(client, names["articles"]) == 120 and count(client, names["authors"]) == before_authors


def test_objects_that_keep_failing_are_listed_and_fail_the_run_beyond_the_allowance(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    client.collections.delete(names["articles"])
    # A collection whose "words" is text: every stored int fails validation on import.
    from weaviate.classes.config import Configure, DataType, Property

    client.collections.create(
        names["articles"],
        properties=[Property(name="words", data_type=DataType.TEXT)],
        vector_config=Configure.Vectors.self_provided(),
    )
    ctx = MemoryRunContext(run_id="restore1")
    with pytest.raises(TooManyFailedObjects, match="could not be imported"):
        run_restore(
            repo, restore_spec(weaviate_peer, collections=[names["articles"]], if_exists="merge", max_failed_objects=5), ctx=ctx
        )
    listed = [w for w in ctx.warnings if "was not imported" in w]
    assert len(listed) == 25 and all(names["articles"] in w for w in listed)  # the first chunk's objects


def test_an_inactive_tenant_is_reported_or_activated_for_the_backup_and_set_back(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    name = f"{names['prefix']}Tenanted"
    create_tenanted(client, name, ("alpha", "beta", "gamma"), per_tenant=12)
    coll = client.collections.get(name)
    coll.tenants.update(Tenant(name="beta", activity_status=TenantActivityStatus.INACTIVE))
    repo = open_repo(tmp_path)
    ctx = MemoryRunContext(run_id="snap1")
    run_backup(repo, backup_spec(weaviate_peer, collections=[name]), "snap1", ctx=ctx)
    assert any("beta" in w and "INACTIVE" in w for w in ctx.warnings)
    assert repo.resolve("snap1").stats["objects"] == 24

    run_backup(repo, backup_spec(weaviate_peer, collections=[name], activate_inactive_tenants=True), "snap2")
    assert repo.resolve("snap2").stats["objects"] == 36
    assert coll.tenants.get()["beta"].activity_status == TenantActivityStatus.INACTIVE

    client.collections.delete(name)
    run_restore(repo, restore_spec(weaviate_peer, collections=[name]), details={})
    restored = client.collections.get(name).tenants.get()
    assert restored["beta"].activity_status == TenantActivityStatus.INACTIVE
    assert count(client, name, "alpha") == 12


def test_clear_deletes_every_object_and_keeps_the_schema(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str]
) -> None:
    config = client.collections.get(names["articles"]).config.get().to_dict()
    ctx = run_clear(clear_spec(weaviate_peer, names["articles"]))
    assert count(client, names["articles"]) == 0
    assert client.collections.get(names["articles"]).config.get().to_dict() == config
    assert ctx.cursors["clear"]["deleted"] == 120
    assert count(client, names["authors"]) == 20


def test_clear_of_a_multi_tenant_collection_empties_every_tenant(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str]
) -> None:
    name = f"{names['prefix']}Tenanted"
    create_tenanted(client, name, ("alpha", "beta", "gamma"), per_tenant=12)
    run_clear(clear_spec(weaviate_peer, name))
    assert [count(client, name, t) for t in ("alpha", "beta", "gamma")] == [0, 0, 0]
    assert sorted(client.collections.get(name).tenants.get()) == ["alpha", "beta", "gamma"]


def test_clear_refuses_a_collection_that_does_not_exist(weaviate_peer: WeaviatePeer) -> None:
    with pytest.raises(SourceMissing, match="does not exist"):
        run_clear(clear_spec(weaviate_peer, "NoSuchCollectionHere"))


def test_clear_needs_confirm_true_in_the_job_file() -> None:
    text = 'name = "c"\nkind = "weaviate.clear"\n[target]\ncollection = "Articles"\n'
    with pytest.raises(InvalidJob, match="confirm = true"):
        parse_job(text, "c.toml")
    with pytest.raises(InvalidJob, match="confirm"):
        parse_job("confirm = false\n" + text, "c.toml")


def test_retention_prunes_old_weaviate_snapshots_and_keeps_every_chunk_of_the_kept_one(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    from davit.adapters.weaviate import tree

    repo = open_repo(tmp_path)
    spec = backup_spec(weaviate_peer, collections=[names["articles"]], chunk_objects=25, retention={"keep_last": 1})
    run_backup(repo, spec, "snap1")
    client.collections.get(names["articles"]).data.insert({"title": "new"}, vector=[0.5] * 16)
    run_backup(repo, spec, "snap2")
    assert [s.id for s in repo.snapshots("wv-backup")] == ["snap2"]
    repo.reload_index()
    chunks = [line.chunk for line in tree.read_zst(repo.tree_bytes(repo.resolve("snap2"))) if isinstance(line, tree.ChunkLine)]
    assert len(chunks) == 5 and all(repo.read_chunk(bytes.fromhex(c)) for c in chunks)

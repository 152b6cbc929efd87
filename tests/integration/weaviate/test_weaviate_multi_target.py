"""Multi-target cross-references: a Note whose `about` may point at an Article or an Author
comes back pointing at the same objects of the same collections, in the same order, also
under `rename` and when the references step is replayed after a kill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from weaviate.client import WeaviateClient

from davit.adapters.repository.repository import Repository
from davit.adapters.weaviate.restore import REFERENCES
from tests.fakes import MemoryRunContext
from tests.integration.weaviate.helpers import (
    backup_spec,
    client_fixture,  # noqa: F401 (provides the `client` fixture)
    dump,
    open_repo,
    ordered_references,
    prefix,
    restore_spec,
    run_backup,
    run_restore,
)
from tests.integration.weaviate.seed import create_articles, create_authors, create_notes
from tests.peers.state import WeaviatePeer

pytestmark = pytest.mark.weaviate


@pytest.fixture
def names(client: WeaviateClient) -> Iterator[dict[str, str]]:
    p = prefix()
    out = {"authors": f"{p}Author", "articles": f"{p}Article", "notes": f"{p}Note"}
    author_ids = create_authors(client, out["authors"])
    article_ids = create_articles(client, out["articles"], out["authors"], author_ids, count=60)
    create_notes(client, out["notes"], out["articles"], article_ids, out["authors"], author_ids)
    yield {**out, "prefix": p}
    for name in list(client.collections.list_all(simple=True)):
        if name.startswith(p):
            client.collections.delete(name)


def backed_up(peer: WeaviatePeer, repo: Repository, names: dict[str, str]) -> None:
    collections = [names["authors"], names["articles"], names["notes"]]
    run_backup(repo, backup_spec(peer, collections=collections, chunk_objects=10), "snap1")


def test_notes_pointing_at_articles_and_authors_come_back_pointing_at_the_same_objects_in_order(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    refs_before = ordered_references(weaviate_peer, names["notes"], "about")
    mixed = [t for t in refs_before.values() if len({c for c, _ in t}) == 2]
    assert len(mixed) == 15 and len(refs_before) == 45  # every third note points into both collections
    before = {k: dump(client, names[k]) for k in ("authors", "articles", "notes")}
    backed_up(weaviate_peer, repo, names)
    for k in ("notes", "articles", "authors"):
        client.collections.delete(names[k])

    ctx = run_restore(repo, restore_spec(weaviate_peer))

    assert not ctx.warnings
    assert ordered_references(weaviate_peer, names["notes"], "about") == refs_before
    assert {k: dump(client, names[k]) for k in ("authors", "articles", "notes")} == before


def test_under_rename_each_reference_points_at_the_renamed_collection_of_its_target(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    renamed = {names[k]: names[k] + "Copy" for k in ("authors", "articles", "notes")}

    run_restore(repo, restore_spec(weaviate_peer, rename=renamed))

    original = ordered_references(weaviate_peer, names["notes"], "about")
    copy = ordered_references(weaviate_peer, renamed[names["notes"]], "about")
    assert copy == {uid: [(renamed[c], u) for c, u in targets] for uid, targets in original.items()}
    config = client.collections.get(renamed[names["notes"]]).config.get().to_dict()
    about = next(p for p in config["properties"] if p["name"] == "about")
    assert sorted(about["dataType"]) == sorted([renamed[names["articles"]], renamed[names["authors"]]])


def test_a_replayed_references_step_leaves_each_reference_once(
    weaviate_peer: WeaviatePeer, client: WeaviateClient, names: dict[str, str], tmp_path: Path
) -> None:
    repo = open_repo(tmp_path)
    backed_up(weaviate_peer, repo, names)
    before = ordered_references(weaviate_peer, names["notes"], "about")
    for k in ("notes", "articles", "authors"):
        client.collections.delete(names[k])
    spec = restore_spec(weaviate_peer)
    ctx = MemoryRunContext(run_id="restore1")
    details: dict[str, object] = {}
    run_restore(repo, spec, ctx=ctx, details=details)
    # As after a kill before the step's end was recorded: every chunk of it is sent again.
    step = REFERENCES + names["notes"]
    ctx.done.discard(step)
    ctx.cursors[step] = {**ctx.cursors[step], "next": 0}

    run_restore(repo, spec, ctx=ctx, details=details)

    assert ordered_references(weaviate_peer, names["notes"], "about") == before

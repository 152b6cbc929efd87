"""`davit export mongodump` of a crafted MongoDB snapshot never writes outside DIR (issue 14,
finding 7). The snapshot is built with the Repository API the way `mongo.backup` stores one
(a tree line per collection, raw BSON chunks), so no server is needed: anyone who can write
the repository can publish such a tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import bson
import pytest

from davit.adapters.mongo.layout import CollectionEntry, meta_to_text, tree_zst
from davit.adapters.repository.repository import Repository
from tests.e2e.conftest import Davit

pytestmark = pytest.mark.e2e


def crafted_snapshot(davit: Davit, snapshot_id: str, namespaces: list[str]) -> None:
    """A mongo snapshot in the --home's default repository with one document per namespace."""
    davit.configure("")
    repo = Repository.open(davit.home / "repository")
    entries = []
    writer = repo.new_pack()
    for i, ns in enumerate(namespaces):
        doc = bson.encode({"_id": i, "ns": ns})
        cid, stored, codec = repo.encode(doc)
        if stored is not None and cid not in writer:
            writer.add(cid, stored, len(doc), codec)
        coll = ns.split(".", 1)[1] if "." in ns else ns
        meta = meta_to_text({"options": {}, "indexes": [], "collectionName": coll, "type": "collection"})
        entries.append(CollectionEntry(ns=ns, meta=meta, chunks=[cid.hex()], docs=1, size=len(doc)))
    repo.seal_pack(writer)
    manifest = {
        "id": snapshot_id,
        "job": "mongo",
        "kind": "mongo",
        "run_id": snapshot_id,
        "created_at": "2026-01-01T00:00:00+00:00",
        "source": {},
        "parent": None,
        "stats": {},
    }
    repo.publish_snapshot(manifest, tree_zst(entries))


def everything_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


HOSTILE = {
    "an absolute database name": "/tmp/davit-export-escape.x",
    "a database name that climbs": "a/../../outside.x",
    "an empty database name": ".coll",
    "an empty collection name": "db.",
    "a collection named .": "db..",
    "a collection named ..": "db...",
    "a NUL in the database name": "d\0b.coll",
    "a NUL in the collection name": "db.a\0b",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_an_export_of_a_snapshot_with_a_hostile_namespace_writes_nothing_and_names_it(
    case: str, davit: Davit, tmp_path: Path
) -> None:
    ns = HOSTILE[case]
    # the hostile namespace comes after a legitimate one: the snapshot is refused whole
    crafted_snapshot(davit, "crafted1", ["good.coll", ns])
    outside_before = everything_under(tmp_path)
    target = tmp_path / "work" / "dump"
    result = davit.cli("export", "mongodump", "crafted1", str(target), check=False)
    assert result.returncode == 1, result
    assert "crafted1 is refused" in result.stderr and repr(ns) in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists() or everything_under(target) == set()
    assert everything_under(tmp_path) - outside_before <= {"work", "work/dump"}
    assert not Path("/tmp/davit-export-escape.x").exists() and not Path("/tmp/davit-export-escape").exists()


def test_legitimate_names_with_slashes_dots_and_unicode_still_export_as_mongodump_names_them(
    davit: Davit, tmp_path: Path
) -> None:
    crafted_snapshot(davit, "fine1", ["shop.orders/2024", "shop.a.b.c", "shop.ünï cödé", "my-db.c"])
    target = tmp_path / "dump"
    davit.cli("export", "mongodump", "fine1", str(target))
    names = everything_under(target)
    assert {"shop/orders%2F2024.bson", "shop/a.b.c.bson", "shop/%C3%BCn%C3%AF%20c%C3%B6d%C3%A9.bson", "my-db/c.bson"} <= names
    assert bson.decode((target / "shop" / "orders%2F2024.bson").read_bytes())["ns"] == "shop.orders/2024"
    assert all(not p.startswith("..") for p in os.listdir(target))

"""What a MongoDB snapshot holds, and the metadata of a collection in mongodump's form.

The snapshot tree has one JSON line per collection. Its keys are those of a tree entry (`treeformat.py`)
(`p` path = the namespace, `t` = "f", `s` = bytes, `c` = chunk ids in order), so `davit
verify` and retention read it unchanged, plus `ns`, `docs` and `meta`: the collection's
`metadata.json` text exactly as mongodump writes it (canonical Extended JSON with `options`,
`indexes`, `uuid`, `collectionName`, `type`). Each chunk is whole raw BSON documents
concatenated, so the collection's `.bson` file is its chunks in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard
from bson import json_util
from pymongo.database import Database

from davit.adapters.mongo.rawbson import JSON
from davit.adapters.zstdlimit import TooLarge, decompress_bounded


@dataclass
class CollectionEntry:
    ns: str
    meta: str  # metadata.json text (canonical Extended JSON)
    chunks: list[str] = field(default_factory=list)
    docs: int = 0
    size: int = 0  # bytes of raw BSON

    @property
    def db(self) -> str:
        return self.ns.split(".", 1)[0]

    @property
    def coll(self) -> str:
        return self.ns.split(".", 1)[1]

    def to_line(self) -> bytes:
        line = {
            "p": self.ns,
            "t": "f",
            "m": 0o644,
            "mt": 0,
            "u": 0,
            "g": 0,
            "s": self.size,
            "c": self.chunks,
            "ns": self.ns,
            "docs": self.docs,
            "meta": self.meta,
        }
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    @staticmethod
    def from_line(line: bytes) -> CollectionEntry:
        d = json.loads(line)
        return CollectionEntry(ns=d["ns"], meta=d["meta"], chunks=d["c"], docs=d["docs"], size=d["s"])


def tree_zst(entries: Iterable[CollectionEntry], level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(b"".join(e.to_line() for e in entries))


TREE_LIMIT = 1 << 30  # a snapshot's collection tree, decompressed


def read_tree(data: bytes) -> Iterator[CollectionEntry]:
    try:  # (a frame declaring more than the bound is refused before any memory is taken)
        plain = decompress_bounded(data, TREE_LIMIT)
    except TooLarge as exc:
        raise zstandard.ZstdError(f"collection tree too large: {exc}") from None
    for line in plain.splitlines():
        if line.strip():
            yield CollectionEntry.from_line(line)


def collection_metadata(db: Database[Any], coll: str) -> dict[str, Any]:
    """options, indexes, uuid (where the server reports one), collectionName and type."""
    info = next(iter(db.list_collections(filter={"name": coll})), None) or {}
    meta: dict[str, Any] = {"options": dict(info.get("options") or {}), "indexes": [dict(i) for i in db[coll].list_indexes()]}
    uuid = (info.get("info") or {}).get("uuid")
    if uuid is not None:
        meta["uuid"] = uuid.hex() if isinstance(uuid, bytes) else str(uuid).replace("-", "")
    meta["collectionName"] = coll
    meta["type"] = info.get("type", "collection")
    return meta


def meta_to_text(meta: dict[str, Any]) -> str:
    return json_util.dumps(meta, json_options=JSON)


def meta_from_text(text: str) -> dict[str, Any]:
    parsed = json_util.loads(text, json_options=JSON)
    if not isinstance(parsed, dict):
        raise ValueError("metadata is not a JSON object")
    return parsed

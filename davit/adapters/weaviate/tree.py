"""A Weaviate snapshot's tree: JSON lines, one per collection and one per chunk of objects.

The lines are shaped like the repository's tree entries (`treeformat.py`: `p` path, `t` type, `c` chunk ids),
so the repository's shared tools read them unchanged: pruning keeps every chunk a Weaviate
snapshot or staging tree names, and `davit verify` re-reads them. The Weaviate part is under
`w` and the keys beside it:

    {"p": "Articles", "t": "d", "w": "collection", "config": {...}, "tenants": [...] | null}
    {"p": "Articles/-/00000001", "t": "f", "c": [id], "s": bytes, "w": "objects",
     "coll": "Articles", "tenant": null, "n": 2000, "refs": 12, "last": uuid}

Order: a collection's line comes before its chunks; chunks of one tenant are contiguous, in
uuid order (the cursor's order). `tenant` is null for a collection without multi-tenancy.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zstandard


@dataclass(frozen=True)
class CollectionLine:
    name: str
    config: dict[str, Any]
    tenants: list[dict[str, str]] | None  # [{"name":..., "status":...}] when multi-tenant
    skipped_tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkLine:
    collection: str
    tenant: str | None
    seq: int
    chunk: str
    size: int
    count: int
    refs: int
    last: str


def collection_line(line: CollectionLine) -> bytes:
    return _dump(
        {
            "p": line.name,
            "t": "d",
            "m": 0,
            "mt": 0,
            "u": 0,
            "g": 0,
            "w": "collection",
            "config": line.config,
            "tenants": line.tenants,
            "skipped": list(line.skipped_tenants),
        }
    )


def chunk_line(line: ChunkLine) -> bytes:
    path = f"{line.collection}/{line.tenant if line.tenant is not None else '-'}/{line.seq:08d}"
    return _dump(
        {
            "p": path,
            "t": "f",
            "m": 0,
            "mt": 0,
            "u": 0,
            "g": 0,
            "s": line.size,
            "i": 0,
            "ct": 0,
            "c": [line.chunk],
            "w": "objects",
            "coll": line.collection,
            "tenant": line.tenant,
            "n": line.count,
            "refs": line.refs,
            "last": line.last,
        }
    )


def skipped_line(collection: str, tenant: str, status: str) -> bytes:
    return _dump(
        {
            "p": f"{collection}/{tenant}",
            "t": "d",
            "m": 0,
            "mt": 0,
            "u": 0,
            "g": 0,
            "w": "skipped",
            "coll": collection,
            "tenant": tenant,
            "status": status,
        }
    )


def _dump(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def parse(lines: Iterable[bytes]) -> Iterator[CollectionLine | ChunkLine | tuple[str, str, str]]:
    """The tree's lines in order; a skipped tenant comes as (collection, tenant, status)."""
    for raw in lines:
        if not raw.strip():
            continue
        d = json.loads(raw)
        kind = d.get("w")
        if kind == "collection":
            yield CollectionLine(d["p"], d["config"], d.get("tenants"), tuple(d.get("skipped", ())))
        elif kind == "objects":
            yield ChunkLine(
                d["coll"],
                d.get("tenant"),
                int(d["p"].rsplit("/", 1)[1]),
                d["c"][0],
                d["s"],
                d["n"],
                d.get("refs", 0),
                d.get("last", ""),
            )
        elif kind == "skipped":
            yield d["coll"], d["tenant"], d["status"]


def read_zst(data: bytes) -> Iterator[CollectionLine | ChunkLine | tuple[str, str, str]]:
    """Lines of a stored (zstd) tree, decompressed as they are read."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    return parse(io.BufferedReader(reader, buffer_size=1 << 16))

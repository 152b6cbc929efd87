"""Reading one collection (or one tenant of it) page by page with the client's cursor.

`CollectionReader.pages` follows Weaviate's cursor (`after` = the last uuid returned);
`CollectionReader.rows` turns each object into a `Row`: properties (blobs included, which
Weaviate leaves out unless named), every vector (the default one, named ones, multi-vectors)
and the uuids of every cross-reference. The backup draws `pages` in a background thread a few
pages ahead of the writer (`davit/adapters/prefetch.py`), so fetching from the server overlaps
converting, encoding and storing, with memory bounded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from weaviate.classes.query import QueryReference

from davit.adapters.weaviate.client import Server
from davit.adapters.weaviate.codec import PackedVector, Row, dump_properties
from davit.adapters.weaviate.decoding import backup_decoding, install
from davit.adapters.weaviate.schema import multi_target_properties


def reference_properties(config: dict[str, Any]) -> list[str]:
    """Names of the cross-reference properties in a collection's exported configuration."""
    out = [p["name"] for p in config.get("references", []) or []]
    for prop in config.get("properties", []) or []:
        types = prop.get("dataType", [])
        if types and all(t[:1].isupper() for t in types) and prop["name"] not in out:
            out.append(prop["name"])
    return out


def blob_properties(config: dict[str, Any]) -> list[str]:
    return [p["name"] for p in config.get("properties", []) or [] if p.get("dataType") == ["blob"]]


@lru_cache(maxsize=64)
def _packer(dims: int) -> struct.Struct:
    return struct.Struct(f"<{dims}f")


def to_row(obj: Any, with_refs: bool) -> Row:
    vectors: dict[str, bytes | Sequence[float]] = {}
    multi: dict[str, list[list[float]]] = {}
    for name, vec in (obj.vector or {}).items():
        if isinstance(vec, PackedVector):
            vectors[name] = vec.tobytes()
        elif vec and isinstance(vec[0], list):
            multi[name] = [v.tolist() if isinstance(v, PackedVector) else v for v in vec]
        else:
            vectors[name] = _packer(len(vec)).pack(*vec)  # float32 bytes: 4 bytes a value, not a Python float
    refs: dict[str, list[tuple[str, str]]] = {}
    if with_refs and obj.references:
        for prop, ref in obj.references.items():
            refs[prop] = [(o.collection, str(o.uuid)) for o in ref.objects]
    props = {k: v for k, v in obj.properties.items() if v is not None}
    return Row(
        uuid=str(obj.uuid), properties=props, vectors=vectors, multi_vectors=multi, refs=refs, props_json=dump_properties(props)
    )


@dataclass(frozen=True)
class Page:
    """One answer of the cursor: the objects as the client returns them, and the `after` that
    asked for them."""

    start: str | None
    objects: list[Any]


class CollectionReader:
    """One collection (or one tenant of it) read in uuid order with the client's cursor.

    `pages` only fetches (the client decodes the answer); `rows` turns a page into rows. The
    backup runs `pages` in the prefetch thread and `rows` in its own, so converting one page
    overlaps fetching the next (profiled: conversion was a sixth of the fetching thread's time
    while the consumer sat waiting for pages)."""

    def __init__(self, server: Server, name: str, tenant: str | None, config: dict[str, Any]) -> None:
        install()
        self.server, self.name, self.tenant = server, name, tenant
        self.collection = server.client.collections.get(name)
        if tenant is not None:
            self.collection = self.collection.with_tenant(tenant)
        self.refs = reference_properties(config)
        self.multi = multi_target_properties(config)
        self.return_refs = [QueryReference(link_on=r, return_properties=[]) for r in self.refs if r not in self.multi] or None
        # Named properties are needed for blobs (left out otherwise); None means "all others".
        self.names = _property_names(config) if blob_properties(config) else None
        self.where = f"reading {name}" + (f" tenant {tenant}" if tenant is not None else "")

    def pages(self, after: str | None, page_size: int) -> Iterator[Page]:
        """Pages in uuid order, starting after `after`."""
        while True:
            with self.server.errors(self.where), backup_decoding():
                result = self.collection.query.fetch_objects(
                    limit=page_size,
                    after=after,
                    include_vector=True,
                    return_properties=self.names,
                    return_references=self.return_refs,
                )
            if not result.objects:
                return
            yield Page(after, result.objects)
            after = str(result.objects[-1].uuid)

    def rows(self, page: Page) -> list[Row]:
        rows = [to_row(o, bool(self.refs)) for o in page.objects]
        if self.multi:
            _add_multi_target_refs(self.server, self.name, self.tenant, page.start, rows, self.multi)
        return rows


def _add_multi_target_refs(
    server: Server, name: str, tenant: str | None, start: str | None, rows: list[Row], props: frozenset[str]
) -> None:
    """The targets of `props` for `rows`, in their stored order, from the REST API's listing of
    the same page (same cursor); an object the listing missed (written meanwhile) by its id."""
    params = {"class": name, "limit": str(len(rows))}
    if start is not None:
        params["after"] = start
    if tenant is not None:
        params["tenant"] = tenant
    where = f"reading the references of {name}" + (f" tenant {tenant}" if tenant is not None else "")
    listed = server.rest_get("objects", params, where).get("objects") or []
    by_id = {o["id"]: o.get("properties") or {} for o in listed}
    for row in rows:
        found = by_id.get(row.uuid)
        if found is None:
            one = server.rest_get(f"objects/{name}/{row.uuid}", {"tenant": tenant} if tenant else {}, where, missing_ok=True)
            found = (one or {}).get("properties") or {}
        for prop in props:
            targets = [_beacon_target(ref["beacon"]) for ref in found.get(prop) or []]
            if targets:
                row.refs[prop] = targets


def _beacon_target(beacon: str) -> tuple[str, str]:
    """(collection, uuid) of `weaviate://localhost/<Collection>/<uuid>`."""
    parts = beacon.split("/")
    return (parts[-2] if len(parts) >= 5 else "", parts[-1])


def _property_names(config: dict[str, Any]) -> list[str]:
    refs = set(reference_properties(config))
    return [p["name"] for p in config.get("properties", []) or [] if p["name"] not in refs]

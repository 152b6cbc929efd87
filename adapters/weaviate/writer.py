"""Importing rows into a collection in batches, with their original uuids.

`Importer.put` sends one chunk's rows as gRPC batches (`insert_many`), a few batches in
flight at a time (rows are decoded a batch at a time, so memory stays small), and retries
the objects a batch reported as failed; what still fails after the retries comes back as
(uuid, reason) for the caller to list and count. A batch with an existing uuid
replaces that object, so importing a chunk twice (a resumed run) leaves one copy of each.
A failure of the transport itself (server down, timeout) is raised, translated, instead.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from weaviate.classes.data import DataObject, ReferenceToMulti
from weaviate.exceptions import WeaviateInsertManyAllFailedError

from adapters.weaviate.client import Server
from adapters.weaviate.codec import Row
from adapters.weaviate.schema import target_name

RETRIES = 3


@dataclass(frozen=True)
class Target:
    """Where one collection's rows go, and how its vectors and references are shaped."""

    name: str
    named_vectors: bool
    multi_target_refs: frozenset[str]
    rename: dict[str, str]


def target_for(config: dict[str, Any], name: str, rename: dict[str, str]) -> Target:
    multi = set()
    for prop in (config.get("references") or []):
        if len(prop.get("target_collections") or prop.get("targetCollections") or []) > 1:
            multi.add(prop["name"])
    for prop in (config.get("properties") or []):
        types = prop.get("dataType") or []
        if len(types) > 1 and all(t[:1].isupper() for t in types):
            multi.add(prop["name"])
    return Target(name, bool(config.get("vectorConfig")), frozenset(multi), rename)


class Importer:
    def __init__(self, server: Server, batch_size: int, concurrency: int) -> None:
        self.server = server
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="davit-weaviate-import")
        self.concurrency = concurrency

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def put(self, target: Target, tenant: str | None, batches: Iterable[list[Row]],
            with_refs: bool) -> tuple[int, list[tuple[str, str]]]:
        """Import the rows of `batches` (at most `concurrency` batches in flight); how many rows
        were sent, and the (uuid, reason) of those still failing after retries."""
        collection = self.server.client.collections.get(target.name)
        if tenant is not None:
            collection = collection.with_tenant(tenant)
        inflight: deque[Future[list[tuple[DataObject[Any, Any], str]]]] = deque()
        failed: list[tuple[DataObject[Any, Any], str]] = []
        sent = 0
        for rows in batches:
            if not rows:
                continue
            sent += len(rows)
            batch = [_data_object(r, target, with_refs) for r in rows]
            inflight.append(self.pool.submit(self._send, collection, target, tenant, batch))
            while len(inflight) > self.concurrency:
                failed.extend(inflight.popleft().result())
        while inflight:
            failed.extend(inflight.popleft().result())
        for attempt in range(RETRIES):
            if not failed:
                break
            time.sleep(0.2 * (attempt + 1))
            pending = [obj for obj, _ in failed]
            failed = []
            for start in range(0, len(pending), self.batch_size):
                failed.extend(self._send(collection, target, tenant, pending[start:start + self.batch_size]))
        return sent, [(str(obj.uuid), reason) for obj, reason in failed]

    def _send(self, collection: Any, target: Target, tenant: str | None,
              batch: list[DataObject[Any, Any]]) -> list[tuple[DataObject[Any, Any], str]]:
        where = f"importing into {target.name}" + (f" tenant {tenant}" if tenant is not None else "")
        try:
            with self.server.errors(where):
                result = collection.data.insert_many(batch)
        except Exception as exc:
            cause = exc.__cause__
            if isinstance(cause, WeaviateInsertManyAllFailedError):
                reason = self.server.redact(str(cause))[:500]
                return [(obj, reason) for obj in batch]
            raise
        return [(batch[i], self.server.redact(err.message)[:500]) for i, err in result.errors.items()]


def _data_object(row: Row, target: Target, with_refs: bool) -> DataObject[Any, Any]:
    named = {**row.vectors, **row.multi_vectors} or None
    vector: Any = named if target.named_vectors else row.vectors.get("default")
    references: dict[str, Any] | None = None
    if with_refs and row.refs:
        references = {}
        for prop, targets in row.refs.items():
            if prop in target.multi_target_refs and targets:
                coll = targets[0][0]
                references[prop] = ReferenceToMulti(
                    target_collection=target_name(coll, target.rename),
                    uuids=[u for c, u in targets if c == coll])
            else:
                references[prop] = [u for _, u in targets]
    return DataObject(properties=row.properties, uuid=row.uuid, vector=vector, references=references)

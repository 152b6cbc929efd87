"""Importing rows into a collection in batches, with their original uuids.

`Importer.put` sends one chunk's rows as gRPC batches (`insert_many`), a few batches in
flight at a time (rows are decoded a batch at a time, so memory stays small), and retries
the objects a batch reported as failed; what still fails after the retries comes back as
(uuid, reason) for the caller to list and count. A batch with an existing uuid
replaces that object, so importing a chunk twice (a resumed run) leaves one copy of each.
A failure of the transport itself (server down, timeout) is raised, translated, instead.

A multi-target reference property (one that may point into several collections) cannot be
given in a batch object with more than one target collection, so such properties are left out
of the object, which clears them, and their references are then added one by one in their
stored order (`reference_add_many`): a replayed chunk again clears and adds, leaving each once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from weaviate.classes.data import DataObject, DataReference
from weaviate.exceptions import WeaviateInsertManyAllFailedError

from davit.adapters.weaviate.client import Server
from davit.adapters.weaviate.codec import Row
from davit.adapters.weaviate.schema import multi_target_properties, target_name

RETRIES = 3


@dataclass(frozen=True)
class Target:
    """Where one collection's rows go, and how its vectors and references are shaped."""

    name: str
    named_vectors: bool
    multi_target_refs: frozenset[str]
    rename: dict[str, str]


def target_for(config: dict[str, Any], name: str, rename: dict[str, str]) -> Target:
    return Target(name, bool(config.get("vectorConfig")), multi_target_properties(config), rename)


class Importer:
    def __init__(self, server: Server, batch_size: int, concurrency: int) -> None:
        self.server = server
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="davit-weaviate-import")
        self.concurrency = concurrency

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def put(
        self, target: Target, tenant: str | None, batches: Iterable[list[Row]], with_refs: bool
    ) -> tuple[int, list[tuple[str, str]]]:
        """Import the rows of `batches` (at most `concurrency` batches in flight); how many rows
        were sent, and the (uuid, reason) of those still failing after retries."""
        collection = self.server.client.collections.get(target.name)
        if tenant is not None:
            collection = collection.with_tenant(tenant)
        inflight: deque[Future[list[tuple[DataObject[Any, Any], str]]]] = deque()
        failed: list[tuple[DataObject[Any, Any], str]] = []
        multi_refs: list[Any] = []
        sent = 0
        for rows in batches:
            if not rows:
                continue
            sent += len(rows)
            batch = [_data_object(r, target, with_refs) for r in rows]
            if with_refs and target.multi_target_refs:
                multi_refs.extend(_multi_target_references(rows, target))
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
                failed.extend(self._send(collection, target, tenant, pending[start : start + self.batch_size]))
        failures = [(str(obj.uuid), reason) for obj, reason in failed]
        if multi_refs:
            failures.extend(self._add_references(collection, target, tenant, multi_refs, {u for u, _ in failures}))
        return sent, failures

    def _add_references(
        self, collection: Any, target: Target, tenant: str | None, refs: list[Any], skip: set[str]
    ) -> list[tuple[str, str]]:
        """Add multi-target references in their stored order, after their objects were sent
        without them (which cleared any added by an earlier attempt at this chunk)."""
        where = f"adding references in {target.name}" + (f" tenant {tenant}" if tenant is not None else "")
        pending = [r for r in refs if str(r.from_uuid) not in skip]
        failures: dict[str, str] = {}
        for attempt in range(RETRIES + 1):
            if not pending:
                break
            if attempt:
                time.sleep(0.2 * attempt)
            again: list[Any] = []
            failures = {}
            for start in range(0, len(pending), self.batch_size):
                part = pending[start : start + self.batch_size]
                with self.server.errors(where):
                    result = collection.data.reference_add_many(part)
                for index, err in result.errors.items():
                    again.append(part[index])
                    failures[str(part[index].from_uuid)] = self.server.redact(err.message)[:500]
            # A reference that failed is sent again on its own (the others of its object are in).
            pending = again
        return sorted(failures.items())

    def _send(
        self, collection: Any, target: Target, tenant: str | None, batch: list[DataObject[Any, Any]]
    ) -> list[tuple[DataObject[Any, Any], str]]:
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
        # Multi-target references are added afterwards (`_multi_target_references`): an
        # object's references can name one target collection per property here.
        references = {
            prop: [u for _, u in targets] for prop, targets in row.refs.items() if prop not in target.multi_target_refs
        } or None
    return DataObject(properties=row.properties, uuid=row.uuid, vector=vector, references=references)


def _multi_target_references(rows: list[Row], target: Target) -> list[Any]:
    return [
        DataReference.MultiTarget(
            from_uuid=row.uuid, from_property=prop, to_uuid=uid, target_collection=target_name(coll, target.rename)
        )
        for row in rows
        for prop, targets in row.refs.items()
        if prop in target.multi_target_refs
        for coll, uid in targets
    ]

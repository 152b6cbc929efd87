"""weaviate.restore: a weaviate.backup snapshot into a Weaviate server, resumable per chunk.

Plan, fixed at prepare time (which also refuses an existing collection when
`if_exists = "fail"`): for each collection `schema:<Target>` (create it from its stored
configuration, renamed if asked, or drop and recreate it, or keep it to merge; then its
tenants), then `objects:<Target>` (every chunk read and verified by the repository before any
object of it is sent, imported with the original uuids; the cursor is the number of chunks
done, recorded after each chunk). Once every collection's objects are in, `references:<Target>`
sends again the objects that carry cross-references, now with them, since their targets
exist; a batch import replaces an object with the same uuid, so replaying a chunk after a
kill leaves one copy. `tenants` finally sets tenants back to their stored status.

Objects that still fail after the importer's retries are listed in warnings (up to
`MAX_LISTED`) and counted; the run fails once the count exceeds `max_failed_objects`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, run_steps
from davit.adapters.weaviate import tree
from davit.adapters.weaviate.client import Connection, Server, collection_exists
from davit.adapters.weaviate.codec import decode_batches
from davit.adapters.weaviate.schema import (
    CollectionExists,
    ensure_collection,
    ensure_tenants,
    renamed_config,
    set_tenant_statuses,
    target_name,
)
from davit.adapters.weaviate.writer import Importer, target_for
from davit.domain.errors import PermanentError, SnapshotNotFound
from davit.domain.jobs import WeaviateRestoreJob
from davit.domain.ports import RunContext

SCHEMA, OBJECTS, REFERENCES, TENANTS = "schema:", "objects:", "references:", "tenants"
MAX_LISTED = 50


class TooManyFailedObjects(PermanentError):
    pass


class WeaviateRestoreWork(RunWork[WeaviateRestoreJob]):
    def __init__(self, inputs: RunInputs[WeaviateRestoreJob]) -> None:
        super().__init__(inputs)
        self.target = self.spec.target
        self.connection = Connection(self.target)

    def plan(self) -> list[str]:
        names = [t for _, t in self.details.get("collections", [])]
        steps = [s + n for n in names for s in (SCHEMA, OBJECTS)]
        return steps + [REFERENCES + n for n in names] + [TENANTS]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        snap = self.repo.resolve(self.spec.source.snapshot, self.spec.source.job)
        if snap.kind != "weaviate":
            raise SnapshotNotFound(f"{snap.id} (a {snap.kind} snapshot, not a weaviate one)")
        stored = [line.name for line in self._lines(snap.id) if isinstance(line, tree.CollectionLine)]
        wanted = stored if self.target.collections == "all" else list(self.target.collections)
        missing = [c for c in wanted if c not in stored]
        if missing:
            raise SnapshotNotFound(f"collection {', '.join(missing)} in snapshot {snap.id}")
        pairs = [[c, target_name(c, self.target.rename)] for c in wanted]
        if self.target.if_exists == "fail":
            with self.connection.use() as server:
                existing = [name for _, name in pairs if collection_exists(server, name)]
                if existing:
                    raise CollectionExists(", ".join(existing), server.where)
        self.details = {
            "snapshot_id": snap.id,
            "collections": pairs,
            "if_exists": self.target.if_exists,
            "objects": snap.stats.get("objects", 0),
        }
        return self.details

    def run(self, ctx: RunContext) -> None:
        pairs = [(s, t) for s, t in self.details["collections"]]
        with self.connection.use() as server:
            importer = Importer(server, self.target.batch_size, self.target.concurrent_requests)
            steps: list[Step] = []
            for stored, name in pairs:
                steps += [
                    Step(SCHEMA + name, partial(self._schema, server=server, stored=stored, name=name)),
                    Step(OBJECTS + name, partial(self._objects, importer=importer, stored=stored, name=name, refs=False)),
                ]
            steps += [
                Step(REFERENCES + name, partial(self._objects, importer=importer, stored=stored, name=name, refs=True))
                for stored, name in pairs
            ]
            steps.append(Step(TENANTS, lambda _ctx: self._tenant_statuses(server, pairs)))
            try:
                run_steps(ctx, steps)
            finally:
                importer.close()

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Count each restored collection's objects on the server against the snapshot."""
        expected: dict[tuple[str, str | None], int] = {}
        for line in self._lines(self.details["snapshot_id"]):
            if isinstance(line, tree.ChunkLine):
                key = (line.collection, line.tenant)
                expected[key] = expected.get(key, 0) + line.count
        failed = sum((ctx.cursor(OBJECTS + t) or {}).get("failed", 0) for _, t in self.details["collections"])
        counts: dict[str, int] = {}
        problems = []
        with self.connection.use() as server:
            for stored, name in self.details["collections"]:
                statuses = self._tenant_status_map(stored)
                total = 0
                for (coll, tenant), want in expected.items():
                    if coll != stored or (tenant is not None and statuses.get(tenant, "ACTIVE") != "ACTIVE"):
                        continue
                    collection = server.client.collections.get(name)
                    if tenant is not None:
                        collection = collection.with_tenant(tenant)
                    with server.errors(f"counting {name}"):
                        got = collection.aggregate.over_all(total_count=True).total_count or 0
                    total += got
                    if got < want - failed:
                        problems.append(f"{name}{'/' + tenant if tenant else ''}: {got} objects, expected {want}")
                counts[name] = total
        self.connection.close()  # the run's last use of it
        if problems:
            raise PermanentError("restored collections differ from the snapshot: " + "; ".join(problems[:5]))
        return {"snapshot_id": self.details["snapshot_id"], "objects": counts, "failed_objects": failed}

    # --- steps ---------------------------------------------------------------------------------

    def _lines(self, snapshot_id: str) -> Iterator[tree.CollectionLine | tree.ChunkLine | tuple[str, str, str]]:
        return tree.read_zst(self.repo.tree_bytes(self.repo.resolve(snapshot_id)))

    def _collection(self, stored: str) -> tree.CollectionLine:
        for line in self._lines(self.details["snapshot_id"]):
            if isinstance(line, tree.CollectionLine) and line.name == stored:
                return line
        raise SnapshotNotFound(f"collection {stored} in snapshot {self.details['snapshot_id']}")

    def _tenant_status_map(self, stored: str) -> dict[str, str]:
        return {t["name"]: t["status"] for t in self._collection(stored).tenants or []}

    def _schema(self, ctx: RunContext, server: Server, stored: str, name: str) -> dict[str, Any]:
        line = self._collection(stored)
        config = renamed_config(line.config, self.target.rename)
        done = ensure_collection(server, config, self.details.get("if_exists", self.target.if_exists))
        created = ensure_tenants(server, name, line.tenants) if line.tenants is not None else 0
        return {"collection": name, "from": stored, "action": done, "tenants_created": created}

    def _objects(self, ctx: RunContext, importer: Importer, stored: str, name: str, refs: bool) -> dict[str, Any]:
        step = (REFERENCES if refs else OBJECTS) + name
        cursor = ctx.cursor(step) or {"next": 0, "items": 0, "failed": 0, "bytes_done": 0}
        line = self._collection(stored)
        target = target_for(line.config, name, self.target.rename)
        index = -1
        for chunk in self._chunks(stored):
            index += 1
            if index < cursor["next"] or (refs and not chunk.refs):
                continue
            ctx.check_stop()
            data = self.repo.read_chunk(bytes.fromhex(chunk.chunk))  # verified before anything is sent
            batches = decode_batches(data, self.target.batch_size)
            if refs:
                batches = ([r for r in rows if r.refs] for rows in batches)
            sent, failures = importer.put(target, chunk.tenant, batches, with_refs=refs)
            for uid, reason in failures:
                if cursor["failed"] < MAX_LISTED:
                    ctx.warn(
                        f"object {uid} of {name}{'/' + chunk.tenant if chunk.tenant else ''} was not imported: {reason}", step
                    )
                cursor["failed"] += 1
            cursor.update(
                next=index + 1, items=cursor["items"] + sent - len(failures), bytes_done=cursor["bytes_done"] + chunk.size
            )
            ctx.checkpoint(step, dict(cursor), bytes_done=cursor["bytes_done"], items_done=cursor["items"])
            if self._failed_total(ctx) > self.target.max_failed_objects:
                raise TooManyFailedObjects(
                    f"{self._failed_total(ctx)} objects could not be imported into {name} (allowed: "
                    f"{self.target.max_failed_objects}); see the run's warnings for their uuids and reasons"
                )
        return {"objects": cursor["items"], "failed": cursor["failed"], "chunks": cursor["next"]}

    def _failed_total(self, ctx: RunContext) -> int:
        return sum(
            (ctx.cursor(s + t) or {}).get("failed", 0) for _, t in self.details["collections"] for s in (OBJECTS, REFERENCES)
        )

    def _chunks(self, stored: str) -> Iterator[tree.ChunkLine]:
        for line in self._lines(self.details["snapshot_id"]):
            if isinstance(line, tree.ChunkLine) and line.collection == stored:
                yield line

    def _tenant_statuses(self, server: Server, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        changed = 0
        for stored, name in pairs:
            tenants = self._collection(stored).tenants
            if tenants:
                changed += set_tenant_statuses(server, name, tenants)
        return {"tenants_set": changed}

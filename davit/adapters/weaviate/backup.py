"""weaviate.backup: collections of a Weaviate server into a snapshot, resumable per chunk.

Plan: one step `export:<Collection>` per collection (fixed at prepare time), then `publish`
and, with a retention policy, `retention`. An export step writes the collection's line
(configuration, tenants) to the staging tree, then reads its objects tenant by tenant in uuid
order with the client's cursor; every few thousand objects (or about `chunk_bytes`) become
one Parquet chunk put into the current pack and one tree line. A checkpoint seals the pack,
fsyncs the staging tree and only then records the cursor: tenant index, `after` (the last
uuid in a stored chunk) and the tree's length. A resumed run truncates the tree to that
length and continues after that uuid, so at most the chunk in flight is read again.

An inactive tenant is skipped with a warning, or, with `activate_inactive_tenants`, activated
for the backup and set back to its status afterwards; the cursor records the activation before
it happens, so a run killed meanwhile still sets it back when it resumes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import zstandard

from davit.adapters.prefetch import in_background
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.staging import Staging
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, publish_then_retention, run_steps, step_names
from davit.adapters.weaviate import tree
from davit.adapters.weaviate.client import Connection, Server, collection_config
from davit.adapters.weaviate.codec import Row, encode_rows, row_size
from davit.adapters.weaviate.reader import CollectionReader
from davit.adapters.weaviate.totals import collection_total
from davit.domain.errors import RunStopped, SourceMissing
from davit.domain.jobs import WeaviateBackupJob
from davit.domain.ports import RunContext

EXPORT = "export:"
ACTIVE = "ACTIVE"
PREFETCH_PAGES = 2


def export_step(collection: str) -> str:
    return EXPORT + collection


class WeaviateBackupWork(RunWork[WeaviateBackupJob]):
    def __init__(self, inputs: RunInputs[WeaviateBackupJob]) -> None:
        super().__init__(inputs)
        self.connection = Connection(self.spec.source)

    def steps(self) -> list[Step]:
        collections = self.details.get("collections", [])
        exports = [
            Step(export_step(name), partial(self._export, collections=collections, index=i)) for i, name in enumerate(collections)
        ]
        return exports + publish_then_retention(self, self._publish)

    def plan(self) -> list[str]:
        return step_names(self.steps())

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        src = self.spec.source
        with self.connection.use() as server, server.errors("listing collections"):
            existing = sorted(server.client.collections.list_all(simple=True))
        if src.collections == "all":
            chosen = existing
        else:
            missing = [c for c in src.collections if c not in existing]
            if missing:
                raise SourceMissing(f"weaviate at {src.host}:{src.http_port}", f"no collection named {', '.join(missing)}")
            chosen = list(src.collections)
        chosen = [c for c in chosen if c not in src.exclude]
        self.details = {"snapshot_id": self.run_id, "collections": chosen, "source": f"{src.host}:{src.http_port}"}
        return self.details

    def run(self, ctx: RunContext) -> None:
        try:
            run_steps(ctx, self.steps())
        finally:
            self.connection.close()  # (finish reads the repository only)

    def _export(self, ctx: RunContext, collections: list[str], index: int) -> dict[str, Any]:
        """Export `collections[index]`, appending to the staging tree where the one before ended."""
        previous = ctx.cursor(export_step(collections[index - 1])) if index else None
        with self.connection.use() as server:
            return _Export(self, ctx, server, collections[index], (previous or {}).get("tree_bytes", 0)).run()

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Check the published snapshot: its tree reads back and every chunk it names exists."""
        info = self.repo.resolve(self.run_id)
        missing = self.repo.missing_chunks(
            bytes.fromhex(line.chunk) for line in tree.read_zst(self.repo.tree_bytes(info)) if isinstance(line, tree.ChunkLine)
        )
        if missing:
            raise SourceMissing(info.where, f"{len(missing)} chunks it names are missing from the repository")
        return {"snapshot_id": self.run_id, **info.stats}

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        if self.repo.snapshot_exists(self.run_id):
            return {"snapshot_id": self.run_id, "already_published": True}
        stats: dict[str, Any] = {"collections": 0, "objects": 0, "chunks": 0, "bytes": 0, "skipped_tenants": 0}
        with open(self.repo.staging(self.run_id).tree, "rb") as fh:
            for line in tree.parse(fh):
                if isinstance(line, tree.CollectionLine):
                    stats["collections"] += 1
                elif isinstance(line, tree.ChunkLine):
                    stats["objects"] += line.count
                    stats["chunks"] += 1
                    stats["bytes"] += line.size
                else:
                    stats["skipped_tenants"] += 1
            fh.seek(0)
            tree_zst = zstandard.ZstdCompressor(level=self.tuning.compression_level).compress(fh.read())
        bytes_stored = sum((ctx.cursor(export_step(c)) or {}).get("bytes_stored", 0) for c in self.details.get("collections", []))
        src = self.spec.source
        manifest = {
            "id": self.run_id,
            "job": self.spec.name,
            "kind": "weaviate",
            "run_id": self.run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {"host": src.host, "http_port": src.http_port, "collections": self.details["collections"]},
            "parent": None,
            "stats": {**stats, "bytes_stored": bytes_stored},
        }
        self.repo.publish_snapshot(manifest, tree_zst)
        self.repo.staging(self.run_id).remove()
        return {"snapshot_id": self.run_id, **stats}


class _Export:
    """One collection's export step."""

    def __init__(self, work: WeaviateBackupWork, ctx: RunContext, server: Server, name: str, base: int) -> None:
        self.work, self.ctx, self.server, self.name = work, ctx, server, name
        self.step = export_step(name)
        self.src = work.spec.source
        self.writer = ChunkWriter(work.repo, work.tuning)
        cursor = ctx.cursor(self.step)
        self.fresh = cursor is None
        self.cursor: dict[str, Any] = cursor or {
            "tree_bytes": base,
            "tenant_index": 0,
            "after": None,
            "seq": 0,
            "items": 0,
            "bytes_done": 0,
            "bytes_stored": 0,
            "activated": None,
        }
        self.stored_before = self.cursor["bytes_stored"]

    def run(self) -> dict[str, Any]:
        staging = self.work.repo.staging(self.work.run_id)
        with self.work.repo.locked(exclusive=False), staging.reopen_tree(self.cursor["tree_bytes"]) as fh:
            self.tree = fh
            self.staging: Staging = staging
            try:
                self._run()
            finally:
                self.writer.abort()
        return {
            "objects": self.cursor["items"],
            "chunks": self.cursor["seq"],
            "tenants": len(self.tenants or []),
            "bytes": self.cursor["bytes_done"],
        }

    def _run(self) -> None:
        if self.fresh:
            config = collection_config(self.server, self.name)
            self.cursor["config_tenants"] = self._tenants(config)
            self.config = config
            self.tree.write(tree.collection_line(tree.CollectionLine(self.name, config, self.cursor["config_tenants"])))
            self._checkpoint()
        else:
            self.config = collection_config(self.server, self.name)
        self.tenants: list[dict[str, str]] | None = self.cursor["config_tenants"]
        total = collection_total(self.server, self.name, self.tenants, ACTIVE, self.src.activate_inactive_tenants)
        if total is not None:
            self.ctx.step_total(self.step, items_total=total)
        units: list[dict[str, str] | None] = list(self.tenants) if self.tenants is not None else [None]
        while self.cursor["tenant_index"] < len(units):
            unit = units[self.cursor["tenant_index"]]
            self._export_unit(unit)
            self.cursor.update(tenant_index=self.cursor["tenant_index"] + 1, after=None, activated=None)
            self._checkpoint()

    def _tenants(self, config: dict[str, Any]) -> list[dict[str, str]] | None:
        if not (config.get("multiTenancyConfig") or {}).get("enabled"):
            return None
        with self.server.errors(f"listing the tenants of {self.name}"):
            found = self.server.client.collections.get(self.name).tenants.get()
        return [{"name": n, "status": _status(t)} for n, t in sorted(found.items())]

    def _export_unit(self, unit: dict[str, str] | None) -> None:
        tenant = unit["name"] if unit is not None else None
        if unit is not None and unit["status"] != ACTIVE:
            if self.cursor["activated"] is None:
                if not self.src.activate_inactive_tenants:
                    self.ctx.warn(
                        f"tenant {tenant} of {self.name} is {unit['status']}: not backed up "
                        "(set activate_inactive_tenants = true to include it)",
                        self.step,
                    )
                    self.tree.write(tree.skipped_line(self.name, unit["name"], unit["status"]))
                    return
                self.cursor["activated"] = {"name": tenant, "status": unit["status"]}
                self._checkpoint()  # recorded before it happens, so a resumed run sets it back
            self._set_status(unit["name"], ACTIVE)
        rows: list[Row] = []
        size = 0
        reader = CollectionReader(self.server, self.name, tenant, self.config)
        for page in in_background(
            reader.pages(self.cursor["after"], self.src.page_objects), PREFETCH_PAGES, "davit-weaviate-read"
        ):
            for row in reader.rows(page):
                rows.append(row)
                size += row_size(row)
                if len(rows) >= self.src.chunk_objects or size >= self.src.chunk_bytes:
                    self._store(tenant, rows)
                    rows, size = [], 0
        if rows:
            self._store(tenant, rows)
        if self.cursor["activated"] is not None:
            self._checkpoint()
            self._set_status(tenant or "", self.cursor["activated"]["status"])

    def _store(self, tenant: str | None, rows: list[Row]) -> None:
        data = encode_rows(rows)
        cid = self.writer.put(data)
        self.cursor["seq"] += 1
        refs = sum(1 for r in rows if r.refs)
        self.tree.write(
            tree.chunk_line(tree.ChunkLine(self.name, tenant, self.cursor["seq"], cid, len(data), len(rows), refs, rows[-1].uuid))
        )
        self.cursor["after"] = rows[-1].uuid
        self.cursor["items"] += len(rows)
        self.cursor["bytes_done"] += len(data)
        if self.writer.checkpoint_due():
            self._checkpoint()
        try:
            self.ctx.check_stop()
        except RunStopped:
            self._checkpoint()
            raise

    def _checkpoint(self) -> None:
        """Seal the pack and fsync the tree, then record where to continue."""
        written = self.writer.seal()
        self.cursor["tree_bytes"] = self.staging.durable(self.tree)
        self.cursor["bytes_stored"] = self.stored_before + self.writer.bytes_stored
        self.ctx.checkpoint(
            self.step,
            dict(self.cursor),
            chunks_written=written,
            bytes_done=self.cursor["bytes_done"],
            bytes_stored=self.cursor["bytes_stored"],
            items_done=self.cursor["items"],
        )

    def _set_status(self, tenant: str, status: str) -> None:
        from weaviate.classes.tenants import Tenant, TenantActivityStatus

        with self.server.errors(f"setting tenant {tenant} of {self.name} to {status}"):
            self.server.client.collections.get(self.name).tenants.update(
                Tenant(name=tenant, activity_status=TenantActivityStatus(status))
            )


def _status(tenant: Any) -> str:
    status = getattr(tenant, "activity_status", ACTIVE)
    value = str(getattr(status, "value", status))
    return {"HOT": "ACTIVE", "COLD": "INACTIVE", "FROZEN": "OFFLOADED"}.get(value, value)

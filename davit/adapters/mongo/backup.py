"""mongo.backup: selected collections into a snapshot, raw BSON, resumable after the last `_id`.

`prepare` connects (a refused login fails the run at once) and fixes the namespaces to dump;
the plan has one step `dump:DB.COLL` per collection, then `publish` and `retention`. A dump
step reads `find_raw_batches()` sorted by `_id` (never decoding a document), cuts the stream
into chunks of whole documents, stores them through a `ChunkWriter` and appends their ids to
a staging list; a checkpoint seals the pack, fsyncs the list and then records the last `_id`
stored (canonical Extended JSON, so any `_id` type round-trips) and the list's length. A
resumed step truncates the list to that length and reads on from after that `_id`. The
collection's options and indexes are read when its data is done, in mongodump's
`metadata.json` form. Collections run in parallel (`parallel`, default 2); memory per
collection is one server batch plus one chunk.

What is not an ordinary collection, as mongodump treats it: a view is kept as its definition
only (`metadata.json` with `type: view` and its `viewOn`/`pipeline` options, no documents),
read in `prepare`; `system.*` collections are skipped (they belong to the server) except
`system.js`, which mongodump keeps; a time-series collection is skipped with a warning (its
buckets are not dumped yet). What was skipped and why is in the run's details (`skipped`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import OperationFailure

from davit.adapters.mongo.client import SYSTEM_DBS, Server
from davit.adapters.mongo.layout import CollectionEntry, collection_metadata, meta_to_text, tree_zst
from davit.adapters.mongo.rawbson import after_id_filter, chunks_of, doc_id, id_from_json, id_to_json, split_docs
from davit.adapters.mongo.totals import collection_documents
from davit.adapters.parallel import Relay, run_parallel
from davit.adapters.prefetch import in_background
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.staging import Staging
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.secrets import redact
from davit.adapters.steps import publish_then_retention, run_steps, step_names
from davit.domain.errors import PermanentError, SourceMissing
from davit.domain.jobs import MongoBackupJob
from davit.domain.namespaces import select, split_ns
from davit.domain.ports import RunContext

METADATA = "metadata.json"  # a collection's options and indexes, beside its staged tree

DUMP = "dump:"
BATCH_DOCS = 1000
NOT_SUPPORTED = {2, 238}  # BadValue, NotImplemented
SYSTEM_SKIPPED = ": a system collection"


class MongoBackupWork(RunWork[MongoBackupJob]):
    def __init__(self, inputs: RunInputs[MongoBackupJob]) -> None:
        super().__init__(inputs)
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        if self._server is None:
            src = self.spec.source
            self._server = Server(src.uri_env, src.uri_file, f"mongo.backup {self.spec.name}")
        return self._server

    @property
    def namespaces(self) -> list[str]:
        return list(self.details.get("namespaces", []))

    def plan(self) -> list[str]:
        return [DUMP + ns for ns in self.namespaces] + step_names(publish_then_retention(self, self._publish))

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        info = self.server.ping()
        namespaces, views, skipped = self._select()
        for warning in selection_warnings(namespaces, views, skipped):
            ctx.warn(warning)
        self.details = {"snapshot_id": self.run_id, "namespaces": namespaces, "views": views, "skipped": skipped, **info}
        return self.details

    def run(self, ctx: RunContext) -> None:
        try:
            todo = [(i, ns) for i, ns in enumerate(self.namespaces) if not ctx.step_done(DUMP + ns)]
            with self.repo.locked(exclusive=False):
                run_parallel([self._dump_task(ctx, i, ns) for i, ns in todo], self.spec.parallel)
            # the dump steps run in parallel (`run_parallel`), each recording itself from its task
            run_steps(ctx, publish_then_retention(self, self._publish))
        finally:
            self.server.close()

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        from davit.adapters.mongo.layout import read_tree

        info = self.repo.resolve(self.run_id)
        missing = self.repo.missing_chunks(bytes.fromhex(c) for e in read_tree(self.repo.tree_bytes(info)) for c in e.chunks)
        if missing:
            raise SourceMissing(info.where, f"{len(missing)} chunks it names are missing from the repository")
        return {"snapshot_id": self.run_id, **info.stats}

    # --- selection -----------------------------------------------------------------------------

    def _select(self) -> tuple[list[str], dict[str, str], list[str]]:
        """The collections to dump, the views to keep ({ns: metadata.json text}), and what is skipped."""
        src = self.spec.source
        client = self.server.client
        with self.server.errors("listing databases and collections"):
            dbs = src.databases or sorted(d for d in client.list_database_names() if d not in SYSTEM_DBS)
            listed = [(db, dict(info)) for db in dbs for info in client[db].list_collections()]
        for ns in src.query:
            split_ns(ns)
        chosen = set(select(sorted(f"{db}.{info['name']}" for db, info in listed), src.include, src.exclude))
        return classify([(db, info) for db, info in listed if f"{db}.{info['name']}" in chosen])

    # --- dump ----------------------------------------------------------------------------------

    def _staging(self, index: int) -> Staging:
        # One staging directory per collection, each with a tree of files-tree lines, so
        # pruning sees the chunks of an unfinished backup (see repository/staging.py).
        return self.repo.staging(self.run_id, part=index)

    def _dump_task(self, ctx: RunContext, index: int, ns: str) -> Any:
        def task(relay: Relay) -> None:
            step = DUMP + ns
            relay.call(ctx.step_started, step)
            summary = self._dump(ctx, relay, index, ns)
            relay.call(ctx.step_completed, step, summary)

        return task

    def _dump(self, ctx: RunContext, relay: Relay, index: int, ns: str) -> dict[str, Any]:
        step = DUMP + ns
        db_name, coll_name = split_ns(ns)
        staging = self._staging(index)
        cursor = ctx.cursor(step) or {}
        docs, nbytes, stored = cursor.get("docs", 0), cursor.get("bytes", 0), cursor.get("bytes_stored", 0)
        base = self._query(ns)

        def query(exotic: bool) -> dict[str, Any]:
            if cursor.get("last_id") is None:
                return base
            after = after_id_filter(id_from_json(cursor["last_id"]), exotic)
            return {"$and": [base, after]} if base else after

        writer = ChunkWriter(self.repo, self.tuning)
        limit = self.spec.chunk_kib << 10
        coll = self.server.client[db_name][coll_name]
        known = None if base else collection_documents(self.server.client[db_name], coll_name)
        if known is not None:
            ctx.step_total(step, items_total=known)
        last_doc: bytes | None = None
        with staging.reopen_tree(cursor.get("list_bytes", 0)) as listing:

            def checkpoint() -> None:
                written = writer.seal()
                length = staging.durable(listing)
                new_cursor = {
                    "list_bytes": length,
                    "docs": docs,
                    "bytes": nbytes,
                    "bytes_stored": stored + writer.bytes_stored,
                    "last_id": None if last_doc is None else id_to_json(doc_id(last_doc)),
                }
                if last_doc is None:
                    new_cursor["last_id"] = cursor.get("last_id")
                relay.call(
                    ctx.checkpoint,
                    step,
                    new_cursor,
                    chunks_written=written,
                    bytes_done=nbytes,
                    bytes_stored=new_cursor["bytes_stored"],
                    items_done=docs,
                )

            def docs_of_batches() -> Any:
                batches = coll.find_raw_batches(query(True), sort=[("_id", 1)], batch_size=BATCH_DOCS)
                try:
                    first = next(batches, None)
                except OperationFailure as exc:
                    if exc.code not in NOT_SUPPORTED:
                        raise
                    # the server refuses $type codes of types it cannot store: leave those out
                    batches = coll.find_raw_batches(query(False), sort=[("_id", 1)], batch_size=BATCH_DOCS)
                    first = next(batches, None)
                try:
                    if first is not None:
                        yield from split_docs(first)
                    for batch in in_background(batches, 2, "davit-mongo-prefetch"):
                        yield from split_docs(batch)
                finally:
                    batches.close()

            stream = chunks_of(docs_of_batches(), limit)
            try:
                with self.server.errors(f"reading {ns}"):
                    for chunk, count, last in stream:
                        cid = writer.put(chunk)
                        listing.write(_chunk_line(ns, cid))
                        docs += count
                        nbytes += len(chunk)
                        last_doc = last
                        if writer.checkpoint_due():
                            checkpoint()
                            ctx.check_stop()
                    checkpoint()
            except BaseException:
                writer.abort()
                raise
            finally:
                stream.close()  # ends the prefetching thread and the server cursor now
        with self.server.errors(f"reading the options and indexes of {ns}"):
            meta = meta_to_text(collection_metadata(self.server.client[db_name], coll_name))
        staging.write_meta(METADATA, meta.encode())
        return {"ns": ns, "documents": docs, "bytes": nbytes}

    def _query(self, ns: str) -> dict[str, Any]:
        text = self.spec.source.query.get(ns)
        if not text:
            return {}
        from bson import json_util

        try:
            parsed = json_util.loads(text)
        except Exception as exc:  # json_util raises several types for bad Extended JSON
            raise PermanentError(f"query for {ns} is not valid Extended JSON: {redact(str(exc))}") from exc
        return dict(parsed)

    # --- publish -------------------------------------------------------------------------------

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        if self.repo.snapshot_exists(self.run_id):
            return {"snapshot_id": self.run_id, "already_published": True}
        entries = []
        stored = 0
        for index, ns in enumerate(self.namespaces):
            staging = self._staging(index)
            cursor = ctx.cursor(DUMP + ns) or {}
            entry = CollectionEntry(
                ns=ns, meta=staging.read_meta(METADATA).decode(), docs=cursor.get("docs", 0), size=cursor.get("bytes", 0)
            )
            entry.chunks = staging.chunk_list(cursor.get("list_bytes", 0))
            stored += cursor.get("bytes_stored", 0)
            entries.append(entry)
        views = [CollectionEntry(ns=ns, meta=meta) for ns, meta in dict(self.details.get("views") or {}).items()]
        stats = {
            "collections": len(entries),
            "views": len(views),
            "documents": sum(e.docs for e in entries),
            "bytes": sum(e.size for e in entries),
            "chunk_refs": sum(len(e.chunks) for e in entries),
            "bytes_stored": stored,
        }
        src = self.spec.source
        manifest = {
            "id": self.run_id,
            "job": self.spec.name,
            "kind": "mongo",
            "run_id": self.run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "databases": list(src.databases),
                "include": list(src.include),
                "exclude": list(src.exclude),
                "server_version": self.details.get("server_version"),
            },
            "parent": None,
            "stats": stats,
        }
        self.repo.publish_snapshot(manifest, tree_zst(sorted(entries + views, key=lambda e: e.ns), self.tuning.compression_level))
        for index in range(len(self.namespaces)):
            self._staging(index).remove()
        return {"snapshot_id": self.run_id, **stats}


def classify(listed: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], dict[str, str], list[str]]:
    """What `listCollections` reported, per database, sorted out as mongodump does: collections to
    dump, views to keep as their `metadata.json` text, and the reasons others are skipped."""
    found, views, skipped = [], {}, []
    for db, info in listed:
        name, kind = info["name"], info.get("type", "collection")
        ns = f"{db}.{name}"
        if name.startswith("system.") and name != "system.js":
            skipped.append(f"{ns}{SYSTEM_SKIPPED}")
        elif kind == "view":
            views[ns] = meta_to_text(
                {"options": dict(info.get("options") or {}), "indexes": [], "collectionName": name, "type": "view"}
            )
        elif kind == "timeseries":
            skipped.append(f"{ns}: a time-series collection (not supported yet)")
        elif kind == "collection":
            found.append(ns)
        else:
            skipped.append(f"{ns}: a {kind}")
    return sorted(found), dict(sorted(views.items())), sorted(skipped)


def selection_warnings(namespaces: list[str], views: dict[str, str], skipped: list[str]) -> list[str]:
    """What the operator is warned of about `classify`'s result: nothing selected, or a collection
    left out of the snapshot that they may expect in it (a time-series collection); a system
    collection is no surprise and stays in the run's details only."""
    warnings = [] if namespaces or views else ["no collection to back up matches the job's databases/include/exclude"]
    return warnings + [f"skipped {reason}" for reason in skipped if not reason.endswith(SYSTEM_SKIPPED)]


def _chunk_line(ns: str, cid: str) -> bytes:
    return (
        json.dumps({"p": ns, "t": "f", "m": 0o644, "mt": 0, "u": 0, "g": 0, "c": [cid]}, separators=(",", ":")).encode() + b"\n"
    )

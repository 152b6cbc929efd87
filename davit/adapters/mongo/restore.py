"""mongo.restore: a snapshot (or a mongodump directory) into a server, resumable per chunk.

`prepare` connects to the target, fixes the source (a snapshot id, or the dump directory)
and the namespaces to restore after `ns_include`/`ns_exclude` and `ns_from`/`ns_to`; the
plan has one step `restore:DB.COLL` per target collection. A step's first start drops the
target collection if `drop = true` and creates it with the source's options; then each chunk
is read and verified (sha256) before a byte of it is sent, inserted in batches of about
`batch_kib` (unordered `insert_many` of raw documents; in `insert` mode a duplicate `_id`,
code 11000, is tolerated so a chunk redone after a kill inserts nothing twice; `upsert`
replaces by `_id`, and a unique index of the target that a source document would break fails
the run naming the collection and the index), and the count of chunks done is recorded
together with what the server acknowledged for them (documents inserted, or matched/upserted,
plus duplicate `_id`s found present) and the last `_id` written. Indexes come after the data;
views are created after every collection. A `system.*` collection in a mongodump directory is
skipped (except `system.js`).

Verification (`finish`) is honest without scanning the target: for each collection, every
document of the source (its count in the snapshot; for a mongodump directory, what was read)
must have been acknowledged by the server, chunk by chunk as the checkpoints recorded, and the
last document written must have been found by `_id` (an index lookup, made at the end of the
collection's step while its indexes are built, its answer kept in the step's cursor).
`verify_count = true` counts each target collection on the server instead (on FerretDB a full
scan).
An option or index the target rejects becomes a warning naming it, or fails the run with
`strict = true`. A connection the server closes on every retry of one batch while it still
answers a ping is a permanent failure naming the collection (FerretDB closes the connection
on a BSON type it cannot store); a server that stops answering is retryable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure, PyMongoError

from davit.adapters.mongo.client import Server
from davit.adapters.mongo.dumpdir import DumpCollection, list_dump
from davit.adapters.mongo.layout import CollectionEntry, meta_from_text, read_tree
from davit.adapters.mongo.rawbson import RAW_CODEC, BadBson, doc_id, id_from_json, id_to_json, split_docs
from davit.adapters.mongo.writes import ChunkWrites
from davit.adapters.parallel import Relay, run_parallel
from davit.adapters.prefetch import calls_ahead, in_background
from davit.adapters.runwork import RunInputs, RunWork
from davit.domain.errors import CorruptChunk, PermanentError, SourceMissing
from davit.domain.jobs import MongoRestoreJob
from davit.domain.namespaces import PatternError, Renamer, select, split_ns
from davit.domain.ports import RunContext

RESTORE, VIEW = "restore:", "view:"
SOURCE_CHUNK = 1 << 20  # how a mongodump file is cut into chunks (fixed: the cursor counts them)


class MongoRestoreWork(RunWork[MongoRestoreJob]):
    def __init__(self, inputs: RunInputs[MongoRestoreJob]) -> None:
        super().__init__(inputs)
        tgt = self.spec.target
        self.server = Server(tgt.uri_env, tgt.uri_file, f"mongo.restore {self.spec.name}")

    def plan(self) -> list[str]:
        return [RESTORE + dst for _, dst in self.details.get("namespaces", [])] + [
            VIEW + dst for _, dst in self.details.get("views", [])
        ]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        src = self.spec.source
        tgt = self.spec.target
        if src.from_mongodump is not None:
            try:
                listed: list[CollectionEntry | DumpCollection] = list(list_dump(Path(src.from_mongodump)))
            except OSError as exc:
                raise SourceMissing(src.from_mongodump, str(exc)) from exc
            origin: dict[str, Any] = {"mongodump": src.from_mongodump}
        else:
            snap = self.repo.resolve(src.snapshot, src.job)
            if snap.kind != "mongo":
                raise PermanentError(f"snapshot {snap.id} is a {snap.kind} snapshot, not a MongoDB one")
            listed = list(read_tree(self.repo.tree_bytes(snap)))
            origin = {"snapshot_id": snap.id}
        kinds = {s.ns: _kind(s) for s in listed}
        views = {ns for ns, kind in kinds.items() if kind == "view"}
        renamer = Renamer.of(tgt.ns_from, tgt.ns_to)
        chosen = []
        for ns in select([s.ns for s in listed], tgt.ns_include, tgt.ns_exclude):
            if kinds[ns] in ("collection", "view"):
                chosen.append(ns)
            else:
                ctx.warn(f"skipped {ns}: a {kinds[ns]} cannot be restored yet")
        pairs = [[ns, renamer.rename(ns)] for ns in chosen]
        targets = [dst for _, dst in pairs]
        for dst in targets:
            try:
                split_ns(dst)
            except PatternError as exc:
                raise PermanentError(f"ns_from/ns_to renames a collection to {dst!r}: {exc}") from exc
        clash = sorted({d for d in targets if targets.count(d) > 1})
        if clash:
            raise PermanentError(f"several source collections would be restored into {', '.join(clash)}")
        info = self.server.ping()
        self.details = {
            **origin,
            "namespaces": [p for p in pairs if p[0] not in views],
            "views": [p for p in pairs if p[0] in views],
            **info,
        }
        self.server.close()
        return self.details

    def run(self, ctx: RunContext) -> None:
        todo = [(s, d) for s, d in self.details["namespaces"] if not ctx.step_done(RESTORE + d)]
        sources = self._sources()
        try:
            with self.repo.locked(exclusive=False):
                run_parallel([self._task(ctx, sources[s], d) for s, d in todo], self.spec.parallel)
            for src, dst in self.details.get("views", []):
                if not ctx.step_done(VIEW + dst):
                    ctx.step_started(VIEW + dst)
                    ctx.step_completed(VIEW + dst, self._view(ctx, dst, meta_from_text(_meta_text(sources[src]))))
        finally:
            self.server.close()

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Every source document acknowledged by the target, and the last one found there."""
        problems, total = [], 0
        sources = self._sources()
        try:
            for src, dst in self.details["namespaces"]:
                cursor = ctx.cursor(RESTORE + dst) or {}
                source = sources[src]
                expected = source.docs if isinstance(source, CollectionEntry) else cursor.get("docs", 0)
                total += expected
                if self.spec.target.verify_count or cursor.get("acked") is None:
                    problems += self._count(dst, expected)
                    continue
                if cursor.get("docs", 0) != expected or cursor["acked"] != expected:
                    problems.append(
                        f"{dst}: {cursor.get('docs', 0)} documents read and {cursor['acked']} "
                        f"acknowledged by the target, expected {expected}"
                    )
                elif cursor.get("last_id") is not None:
                    found = cursor.get("last_found")
                    if found is None:  # a cursor from before the step looked it up
                        found = self._last_present(dst, cursor["last_id"])
                    if not found:
                        shown = json_util.dumps(id_from_json(cursor["last_id"]))
                        problems.append(f"{dst}: the last document restored (_id {shown}) is missing")
        finally:
            self.server.close()
        if problems:
            raise PermanentError(f"restored collections differ from the source: {'; '.join(problems[:5])}")
        return {
            "snapshot_id": self.details.get("snapshot_id"),
            "collections": len(self.details["namespaces"]),
            "views": len(self.details.get("views") or []),
            "documents": total,
        }

    def _count(self, dst: str, expected: int) -> list[str]:
        """Count the target collection on the server: at least `expected`, exactly after a drop in insert mode."""
        db, coll = split_ns(dst)
        with self.server.errors(f"counting {dst}"):
            found = self.server.client[db][coll].count_documents({})
        if found < expected or (self.spec.target.drop and self.spec.target.mode == "insert" and found != expected):
            return [f"{dst}: {found} documents, expected {expected}"]
        return []

    # --- sources -------------------------------------------------------------------------------

    def _sources(self) -> dict[str, Any]:
        if "mongodump" in self.details:
            return {c.ns: c for c in list_dump(Path(self.details["mongodump"]))}
        snap = self.repo.resolve(self.details["snapshot_id"])
        return {e.ns: e for e in read_tree(self.repo.tree_bytes(snap))}

    def _chunks(self, source: CollectionEntry | DumpCollection, skip: int) -> Iterator[bytes]:
        """The collection's chunks after the first `skip`, each verified before it is handed out."""
        if isinstance(source, DumpCollection):
            for index, (chunk, _count, _last) in enumerate(source.chunks(SOURCE_CHUNK)):
                if index >= skip:
                    yield chunk
            return
        ids = [bytes.fromhex(c) for c in source.chunks[skip:]]
        with ThreadPoolExecutor(1, thread_name_prefix="davit-mongo-read") as pool:
            yield from calls_ahead(pool, self.repo.read_chunk, ids, depth=1)

    # --- one collection ------------------------------------------------------------------------

    def _task(self, ctx: RunContext, source: CollectionEntry | DumpCollection, dst: str) -> Any:
        def task(relay: Relay) -> None:
            step = RESTORE + dst
            relay.call(ctx.step_started, step)
            relay.call(ctx.step_completed, step, self._restore(ctx, relay, source, dst))

        return task

    def _restore(self, ctx: RunContext, relay: Relay, source: CollectionEntry | DumpCollection, dst: str) -> dict[str, Any]:
        step = RESTORE + dst
        db_name, coll_name = split_ns(dst)
        meta = meta_from_text(_meta_text(source))
        cursor = ctx.cursor(step) or {}
        coll = self.server.client[db_name].get_collection(coll_name, codec_options=RAW_CODEC)
        warnings = cursor.get("warnings", 0)
        if not cursor:
            warnings += self._create(ctx, relay, dst, meta)
            cursor = {"chunks": 0, "docs": 0, "bytes": 0, "duplicates": 0, "acked": 0, "last_id": None, "warnings": warnings}
            relay.call(ctx.checkpoint, step, cursor)
        state: dict[str, Any] = {key: cursor.get(key, 0) for key in ("chunks", "docs", "bytes", "duplicates")}
        state.update(acked=cursor.get("acked"), last_id=cursor.get("last_id"), warnings=warnings)
        posted: Future[Any] | None = None

        def settle(write: Future[tuple[int, int]], raw: list[RawBSONDocument], size: int) -> Future[Any]:
            written, found = write.result()
            state["duplicates"] += found
            if state["acked"] is not None:  # None: a cursor from before acknowledgements were kept
                state["acked"] += written
            state["chunks"] += 1
            state["docs"] += len(raw)
            state["bytes"] += size
            if raw:
                state["last_id"] = id_to_json(doc_id(raw[-1].raw))
            # the chunk is acknowledged by the server: record it without waiting for the commit
            return relay.post(ctx.checkpoint, step, dict(state), bytes_done=state["bytes"], items_done=state["docs"])

        # Up to `writers` chunks are with the server at once (it parses one while it stores
        # another); they are settled in order, so a checkpoint always covers a prefix of the
        # chunks and a kill redoes at most the chunks in flight.
        in_flight: deque[tuple[Future[tuple[int, int]], list[RawBSONDocument], int]] = deque()
        writes = ChunkWrites(self.server, self.spec.target.mode, self.spec.batch_kib << 10)
        prepared = in_background(self._prepared(source, state["chunks"], dst), 2, "davit-mongo-prefetch")
        with ThreadPoolExecutor(self.spec.writers, thread_name_prefix="davit-mongo-write") as pool:
            try:
                sent = state["chunks"]
                for raw, size in prepared:
                    ctx.check_stop()
                    relay.check(posted)
                    in_flight.append((pool.submit(writes.write, coll, dst, raw, sent), raw, size))
                    sent += 1
                    if len(in_flight) >= self.spec.writers:
                        posted = settle(*in_flight.popleft())
                while in_flight:
                    posted = settle(*in_flight.popleft())
            finally:
                prepared.close()  # ends the preparing thread now
                for write, _, _ in in_flight:
                    write.cancel()
        if posted is not None:
            posted.result()  # the last checkpoint is durable (or its failure raised) before going on
        docs, nbytes, dups = state["docs"], state["bytes"], state["duplicates"]
        # The last document is looked up while the indexes are built (the server does both at
        # once; on FerretDB the lookup is no index hit): `finish` reads the answer from the cursor.
        with ThreadPoolExecutor(1, thread_name_prefix="davit-mongo-check") as checker:
            found = checker.submit(self._last_present, dst, state["last_id"])
            warnings += self._indexes(ctx, relay, dst, meta)
            state["last_found"] = found.result()
        state["warnings"] = warnings
        relay.call(ctx.checkpoint, step, dict(state), bytes_done=nbytes, items_done=docs)
        return {"ns": dst, "documents": docs, "bytes": nbytes, "duplicates_skipped": dups, "warnings": warnings}

    def _last_present(self, dst: str, last_id: str | None) -> bool | None:
        """Whether the last document restored is in the target (None: nothing was restored, or
        `verify_count` counts instead)."""
        if last_id is None or self.spec.target.verify_count:
            return None
        db, coll = split_ns(dst)
        with self.server.errors(f"checking {dst}"):
            return self.server.client[db][coll].find_one({"_id": id_from_json(last_id)}, {"_id": 1}) is not None

    def _prepared(
        self, source: CollectionEntry | DumpCollection, skip: int, dst: str
    ) -> Iterator[tuple[list[RawBSONDocument], int]]:
        """The chunks after the first `skip` as documents ready to send, and each chunk's size. Run
        ahead in a thread (`prefetch`), so reading, checking and splitting the next chunk overlaps
        with the server writing this one."""
        index = skip
        try:
            for chunk in self._chunks(source, skip):
                try:
                    yield [RawBSONDocument(bytes(d), RAW_CODEC) for d in split_docs(chunk)], len(chunk)
                except BadBson as exc:
                    raise CorruptChunk(f"#{index}", dst, str(exc)) from exc
                index += 1
        except BadBson as exc:  # a mongodump file cut short or corrupt
            raise CorruptChunk(f"#{index}", str(getattr(source, "bson", dst)), str(exc)) from exc

    # --- options and indexes -------------------------------------------------------------------

    def _rejected(self, ctx: RunContext, relay: Relay, dst: str, message: str) -> int:
        if self.spec.target.strict:
            raise PermanentError(f"{message} (strict = true)")
        relay.call(ctx.warn, message, RESTORE + dst)
        return 1

    def _create(self, ctx: RunContext, relay: Relay, dst: str, meta: dict[str, Any]) -> int:
        db_name, coll_name = split_ns(dst)
        db = self.server.client[db_name]
        with self.server.errors(f"preparing {dst}"):
            if self.spec.target.drop:
                db.drop_collection(coll_name)
            if coll_name in db.list_collection_names(filter={"name": coll_name}):
                return 0
        options = {k: v for k, v in dict(meta.get("options") or {}).items()}
        if meta.get("type", "collection") != "collection":
            return self._rejected(ctx, relay, dst, f"{dst}: a {meta.get('type')} cannot be restored; skipped its definition")
        if options:
            try:
                db.command({"create": coll_name, **options})
                return 0
            except OperationFailure as exc:
                names = ", ".join(sorted(options))
                warned = self._rejected(
                    ctx,
                    relay,
                    dst,
                    f"{dst}: collection option(s) {names} rejected by the target: {self.server.redact(str(exc.details or exc))}",
                )
            except PyMongoError as exc:
                with self.server.errors(f"creating {dst}"):
                    raise exc
        else:
            warned = 0
        with self.server.errors(f"creating {dst}"):
            db.create_collection(coll_name, check_exists=False)
        return warned

    def _view(self, ctx: RunContext, dst: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Create a view from its definition (`viewOn`, `pipeline`, ...), after every collection."""
        db_name, name = split_ns(dst)
        db = self.server.client[db_name]
        options = dict(meta.get("options") or {})
        with self.server.errors(f"preparing view {dst}"):
            if self.spec.target.drop:
                db.drop_collection(name)
            if name in db.list_collection_names(filter={"name": name}):
                return {"ns": dst, "created": False, "warnings": 0}
        try:
            db.command({"create": name, **options})
        except OperationFailure as exc:
            message = (
                f"{dst}: view on {options.get('viewOn')} rejected by the target: "
                f"{self.server.redact(str((exc.details or {}).get('errmsg', exc)))}"
            )
            if self.spec.target.strict:
                raise PermanentError(f"{message} (strict = true)") from exc
            ctx.warn(message, VIEW + dst)
            return {"ns": dst, "created": False, "warnings": 1}
        except PyMongoError as exc:
            with self.server.errors(f"creating view {dst}"):
                raise exc
        return {"ns": dst, "created": True, "warnings": 0}

    def _indexes(self, ctx: RunContext, relay: Relay, dst: str, meta: dict[str, Any]) -> int:
        db_name, coll_name = split_ns(dst)
        db = self.server.client[db_name]
        warned = 0
        for index in meta.get("indexes") or []:
            spec = {k: v for k, v in dict(index).items() if k not in ("v", "ns")}
            name = spec.get("name", "?")
            if name == "_id_":
                continue
            try:
                db.command("createIndexes", coll_name, indexes=[spec])
            except OperationFailure as exc:
                errmsg = (exc.details or {}).get("errmsg", str(exc))
                warned += self._rejected(
                    ctx, relay, dst, f"{dst}: index {name} rejected by the target: {self.server.redact(str(errmsg))}"
                )
            except PyMongoError as exc:
                with self.server.errors(f"creating index {name} on {dst}"):
                    raise exc
        return warned


def _meta_text(source: CollectionEntry | DumpCollection) -> str:
    return source.meta if isinstance(source, CollectionEntry) else source.meta_text()


def _kind(source: CollectionEntry | DumpCollection) -> str:
    """`collection`, `view`, ... as the source's metadata says."""
    try:
        return str(meta_from_text(_meta_text(source)).get("type", "collection"))
    except ValueError:
        return "collection"

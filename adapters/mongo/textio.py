"""mongo.export and mongo.import: one collection to or from JSON Lines or CSV, resumable.

Export reads with the job's query, sort (with `_id` appended as the tie-breaker, so the order
is total and a resume can skip what is written), skip and limit, and appends lines to
`<path>.part`; a checkpoint fsyncs the file and records its length and the documents written;
a resumed run truncates the file to that length and skips that many more documents. The
finished file is renamed to `<path>`. Import reads the file by lines and records the byte
offset after each batch written: a resumed run seeks there. Modes: `insert` (an existing
`_id` is a tolerated duplicate, so a redone batch of documents that carry `_id` inserts
nothing twice; documents without `_id` get one from the server and may be inserted again if
their batch is redone), `upsert` (replace the document matching `upsert_fields`) and `merge`
(`$set` the fields into it); both are idempotent. CSV values are strings; dotted header names
become nested documents.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from bson import json_util
from bson.son import SON
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from adapters.mongo.client import MongoRefused, Server
from adapters.mongo.rawbson import CODEC
from adapters.repository.fsutil import fsync_dir, storage_error
from adapters.repository.tuning import Tuning
from domain.errors import PermanentError, SourceMissing
from domain.jobs import MongoExportJob, MongoImportJob
from domain.namespaces import split_ns
from domain.ports import RunContext

EXPORT, IMPORT = "export", "import"
GROUP = 50  # writes per command (FerretDB 1.24 never answers an update command of 100 or more)


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class MongoExportWork:
    def __init__(self, spec: MongoExportJob, run_id: str, tuning: Tuning) -> None:
        self.spec = spec
        self.run_id = run_id
        self.tuning = tuning
        self.server = Server(spec.source.uri_env, spec.source.uri_file, f"mongo.export {spec.name}")
        self.path = Path(spec.output.path)
        self.part = self.path.with_name(self.path.name + ".part")

    def plan(self) -> list[str]:
        return [EXPORT]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        info = self.server.ping()
        self.server.close()
        if not self.path.parent.is_dir():
            raise SourceMissing(str(self.path.parent), "the output directory does not exist")
        return {"output": str(self.path), **info}

    def run(self, ctx: RunContext) -> None:
        if ctx.step_done(EXPORT):
            return
        ctx.step_started(EXPORT)
        try:
            ctx.step_completed(EXPORT, self._export(ctx))
        finally:
            self.server.close()

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(EXPORT) or {}
        if self.part.exists():
            os.replace(self.part, self.path)
            fsync_dir(self.path.parent)
        return {"output": str(self.path), "documents": cursor.get("docs", 0), "bytes": cursor.get("bytes", 0)}

    def _export(self, ctx: RunContext) -> dict[str, Any]:
        src, out = self.spec.source, self.spec.output
        cursor = ctx.cursor(EXPORT) or {}
        docs, size = cursor.get("docs", 0), cursor.get("bytes", 0)
        sort = list(json_util.loads(src.sort).items())
        if "_id" not in dict(sort):
            sort.append(("_id", 1))
        if src.limit and docs >= src.limit:
            return {"documents": docs, "bytes": size}
        db, coll = split_ns(src.namespace)
        projection = {f: 1 for f in out.fields} or None
        mode = json_util.CANONICAL_JSON_OPTIONS if out.json_mode == "canonical" else json_util.RELAXED_JSON_OPTIONS
        last = time.monotonic()
        try:
            fh = open(self.part, "ab+")  # noqa: SIM115
        except OSError as exc:
            raise storage_error(exc, self.part) from exc
        with fh:
            fh.truncate(size)
            fh.seek(0, os.SEEK_END)
            if out.format == "csv" and size == 0:
                fh.write(self._csv_row(out.fields))

            def checkpoint() -> None:
                fh.flush()
                os.fsync(fh.fileno())
                ctx.checkpoint(EXPORT, {"docs": docs, "bytes": fh.tell()}, bytes_done=fh.tell(), items_done=docs)

            collection = self.server.client[db].get_collection(coll, codec_options=CODEC)
            with self.server.errors(f"reading {src.namespace}"):
                found = collection.find(json_util.loads(src.query), projection, sort=sort, skip=src.skip + docs,
                                        limit=(src.limit - docs) if src.limit else 0)
                for doc in found:
                    if out.format == "csv":
                        fh.write(self._csv_row(["" if (v := _get(doc, f)) is None else
                                                (v if isinstance(v, str) else json_util.dumps(v, json_options=mode))
                                                for f in out.fields]))
                    else:
                        fh.write(json_util.dumps(doc, json_options=mode).encode() + b"\n")
                    docs += 1
                    if time.monotonic() - last >= self.tuning.checkpoint_seconds:
                        checkpoint()
                        last = time.monotonic()
                        ctx.check_stop()
            checkpoint()
            return {"documents": docs, "bytes": fh.tell()}

    @staticmethod
    def _csv_row(values: list[str]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue().encode()


class MongoImportWork:
    def __init__(self, spec: MongoImportJob, run_id: str, tuning: Tuning) -> None:
        self.spec = spec
        self.run_id = run_id
        self.tuning = tuning
        self.server = Server(spec.target.uri_env, spec.target.uri_file, f"mongo.import {spec.name}")
        self.path = Path(spec.input.path)

    def plan(self) -> list[str]:
        return [IMPORT]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        if not self.path.is_file():
            raise SourceMissing(str(self.path), "no such file")
        info = self.server.ping()
        self.server.close()
        return {"input": str(self.path), "bytes": self.path.stat().st_size, **info}

    def run(self, ctx: RunContext) -> None:
        if ctx.step_done(IMPORT):
            return
        ctx.step_started(IMPORT)
        try:
            ctx.step_completed(IMPORT, self._import(ctx))
        finally:
            self.server.close()

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(IMPORT) or {}
        return {"input": str(self.path), "documents": cursor.get("docs", 0), "duplicates": cursor.get("duplicates", 0)}

    def _records(self, fh: TextIO, offset: int) -> Iterator[tuple[dict[str, Any], int]]:
        """(document, byte offset after it) from `offset` on."""
        pos = 0

        def lines() -> Iterator[str]:
            nonlocal pos
            while line := fh.readline():
                pos += len(line.encode())
                yield line

        source = lines()
        if self.spec.input.format == "csv":
            header = next(csv.reader(source), None)
            if header is None:
                return
            if offset > pos:
                fh.seek(offset)
                pos = offset
            for n, row in enumerate(csv.reader(source)):
                if len(row) != len(header):
                    raise PermanentError(f"{self.path}: CSV row {n + 1} after offset {offset} has {len(row)} "
                                         f"values for {len(header)} columns")
                yield _nest(dict(zip(header, row, strict=True))), pos
            return
        fh.seek(offset)
        pos = offset
        for line in source:
            if not line.strip():
                continue
            try:
                doc = json_util.loads(line)
            except Exception as exc:  # json_util raises several types for bad Extended JSON
                raise PermanentError(f"{self.path}: line at byte {pos - len(line.encode())} is not Extended "
                                     f"JSON: {str(exc)[:200]}") from exc
            yield dict(doc), pos

    def _import(self, ctx: RunContext) -> dict[str, Any]:
        tgt = self.spec.target
        cursor = ctx.cursor(IMPORT) or {}
        offset, docs, dups = cursor.get("offset", 0), cursor.get("docs", 0), cursor.get("duplicates", 0)
        db, coll = split_ns(tgt.namespace)
        collection = self.server.client[db][coll]
        batch: list[dict[str, Any]] = []
        with open(self.path, encoding="utf-8", newline="") as fh:
            for doc, end in self._records(fh, offset):
                batch.append(doc)
                if len(batch) >= self.spec.batch_docs:
                    dups += self._write(collection, batch)
                    docs += len(batch)
                    batch = []
                    ctx.checkpoint(IMPORT, {"offset": end, "docs": docs, "duplicates": dups}, bytes_done=end,
                                   items_done=docs)
                    ctx.check_stop()
                last_end = end
            if batch:
                dups += self._write(collection, batch)
                docs += len(batch)
                ctx.checkpoint(IMPORT, {"offset": last_end, "docs": docs, "duplicates": dups}, bytes_done=last_end,
                               items_done=docs)
        return {"documents": docs, "duplicates": dups}

    def _write(self, collection: Any, batch: list[dict[str, Any]]) -> int:
        tgt = self.spec.target
        try:
            if tgt.mode == "insert":
                collection.insert_many(batch, ordered=False)
                return 0
            for start in range(0, len(batch), GROUP):
                ops: list[Any] = []
                for doc in batch[start : start + GROUP]:
                    key = SON((f, _get(doc, f)) for f in tgt.upsert_fields)
                    if tgt.mode == "upsert":
                        ops.append(ReplaceOne(key, doc, upsert=True))
                    else:
                        ops.append(UpdateOne(key, {"$set": {k: v for k, v in doc.items() if k != "_id"}}, upsert=True))
                collection.bulk_write(ops, ordered=False)
            return 0
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != 11000]
            if other:
                raise MongoRefused(f"{tgt.namespace}: the target refused {len(other)} document(s): "
                                   f"{self.server.redact(str(other[0].get('errmsg')))}") from exc
            return len(errors)
        except PyMongoError as exc:
            with self.server.errors(f"writing to {tgt.namespace}"):
                raise exc

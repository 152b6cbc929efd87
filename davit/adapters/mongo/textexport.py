"""mongo.export: one collection to a JSON Lines or CSV file, resumable after the last document written.

The documents are read with the job's query, sort and projection; `_id` is appended to the
sort as the tie-breaker, so the order is total. Lines are appended to `<path>.part`; a
checkpoint fsyncs it and records the documents and bytes written and the sort key of the last
document written (canonical Extended JSON). A resumed run truncates the file to that length
and reads on from the documents that sort after that key (with `skip` already spent and
`limit` reduced by what is written), so documents inserted or removed meanwhile neither shift
nor repeat lines. Sort keys are fetched even if `fields` leaves them out, and dropped again
before writing. The finished file is renamed to `<path>` by the committing step `publish`: a
cancel that comes once it has started is ignored, so a written file is never reported cancelled.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo.errors import OperationFailure

from davit.adapters.mongo.client import Server
from davit.adapters.mongo.rawbson import CODEC, JSON, after_sort_key_filter
from davit.adapters.mongo.textvalues import MISSING, csv_cell, drop_path, get_path
from davit.adapters.repository.fsutil import fsync_dir, storage_error
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, publish_step, run_steps
from davit.domain.errors import PermanentError, SourceMissing
from davit.domain.jobs import MongoExportJob
from davit.domain.namespaces import split_ns
from davit.domain.ports import RunContext

EXPORT = "export"
PUBLISH = "publish"
NOT_SUPPORTED = {2, 238}  # BadValue, NotImplemented: FerretDB refuses some $type codes
RELAXED = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)
CANONICAL = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)


class MongoExportWork(RunWork[MongoExportJob]):
    def __init__(self, inputs: RunInputs[MongoExportJob]) -> None:
        super().__init__(inputs)
        spec = self.spec
        self.server = Server(spec.source.uri_env, spec.source.uri_file, f"mongo.export {spec.name}")
        self.path = Path(spec.output.path)
        self.part = self.path.with_name(self.path.name + ".part")
        sort = [(k, int(v)) for k, v in json_util.loads(spec.source.sort).items()]
        self.sort = sort if "_id" in dict(sort) else [*sort, ("_id", 1)]
        fields = spec.output.fields
        # sort keys the output leaves out: fetched to resume after them, dropped before writing
        self.extra = [
            k for k, _ in self.sort if k != "_id" and fields and not any(k == f or k.startswith(f + ".") for f in fields)
        ]
        self.projection = {f: 1 for f in [*fields, *self.extra]} or None

    def plan(self) -> list[str]:
        return [EXPORT, PUBLISH]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        info = self.server.ping()
        self.server.close()
        if not self.path.parent.is_dir():
            raise SourceMissing(str(self.path.parent), "the output directory does not exist")
        return {"output": str(self.path), **info}

    def run(self, ctx: RunContext) -> None:
        try:
            run_steps(ctx, [Step(EXPORT, self._export)])
        finally:
            self.server.close()  # a no-op when the step was done already: no client was made
        run_steps(ctx, [publish_step(self._publish)])

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        if self.part.exists():  # else renamed before a crash that came before the step's end
            os.replace(self.part, self.path)
            fsync_dir(self.path.parent)
        return {"output": str(self.path)}

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(EXPORT) or {}
        if self.part.exists() or not self.path.exists():
            raise PermanentError(f"{self.path}: the export's output is not in place")
        return {"output": str(self.path), "documents": cursor.get("docs", 0), "bytes": cursor.get("bytes", 0)}

    def _documents(self, cursor: dict[str, Any]) -> Iterator[dict[str, Any]]:
        src = self.spec.source
        db, coll = split_ns(src.namespace)
        collection = self.server.client[db].get_collection(coll, codec_options=CODEC)
        query = dict(json_util.loads(src.query))
        docs = cursor.get("docs", 0)
        limit = (src.limit - docs) if src.limit else 0

        def find(exotic: bool) -> Any:
            if cursor.get("last") is None:
                return collection.find(query, self.projection, sort=self.sort, skip=src.skip, limit=limit)
            last = json_util.loads(cursor["last"], json_options=JSON)
            if any(isinstance(v, list) for v in last):
                raise PermanentError(
                    f"{src.namespace}: cannot resume an export sorted by an array-valued field "
                    f"({self.sort}); run the job again to export from the start"
                )
            after = after_sort_key_filter(self.sort, last, exotic)
            return collection.find({"$and": [query, after]} if query else after, self.projection, sort=self.sort, limit=limit)

        found = find(True)
        try:
            first = next(found, None)
        except OperationFailure as exc:
            if exc.code not in NOT_SUPPORTED:
                raise
            found = find(False)
            first = next(found, None)
        if first is not None:
            yield first
            yield from found

    def _export(self, ctx: RunContext) -> dict[str, Any]:
        src, out = self.spec.source, self.spec.output
        cursor = ctx.cursor(EXPORT) or {}
        docs, size, last_key = cursor.get("docs", 0), cursor.get("bytes", 0), cursor.get("last")
        if src.limit and docs >= src.limit:
            return {"documents": docs, "bytes": size}
        mode = CANONICAL if out.json_mode == "canonical" else RELAXED
        last = time.monotonic()
        try:
            fh = open(self.part, "ab+")  # noqa: SIM115
        except OSError as exc:
            raise storage_error(exc, self.part) from exc
        with fh:
            fh.truncate(size)
            fh.seek(0, os.SEEK_END)
            if out.format == "csv" and out.header and size == 0:
                fh.write(_csv_row(out.fields))

            def checkpoint() -> None:
                fh.flush()
                os.fsync(fh.fileno())
                ctx.checkpoint(
                    EXPORT, {"docs": docs, "bytes": fh.tell(), "last": last_key}, bytes_done=fh.tell(), items_done=docs
                )

            with self.server.errors(f"reading {src.namespace}"):
                for doc in self._documents(cursor):
                    key = [None if (v := get_path(doc, k)) is MISSING else v for k, _ in self.sort]
                    for path in self.extra:
                        drop_path(doc, path)
                    if out.format == "csv":
                        fh.write(_csv_row([csv_cell(get_path(doc, f), mode) for f in out.fields]))
                    else:
                        fh.write(json_util.dumps(doc, json_options=mode).encode() + b"\n")
                    docs += 1
                    last_key = json_util.dumps(key, json_options=JSON)
                    if time.monotonic() - last >= self.tuning.checkpoint_seconds:
                        checkpoint()
                        last = time.monotonic()
                        ctx.check_stop()
            checkpoint()
            return {"documents": docs, "bytes": fh.tell()}


def _csv_row(values: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()

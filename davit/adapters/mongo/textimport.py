"""mongo.import: a JSON Lines or CSV file into one collection, resumable at the line after the last batch.

The file is read by lines (bytes, so offsets are exact); after each batch is acknowledged by
the server a checkpoint records the byte offset and line number after it, and a resumed run
seeks there (a CSV file's column names are read again from its header, or from `fields`).
A batch in flight at a crash is written again, so every write is idempotent: a record
without `_id` that is inserted gets an ObjectId derived from the run and its line number
(the timestamp part is the time the run's import began), so its second insert is a
duplicate key (code 11000), tolerated and counted like the duplicates of `insert` mode;
`upsert` replaces and `merge` `$set`s the document matching `upsert_fields`, inserting when
nothing matches. A record lacking one of those fields is inserted. Modes, CSV options and
column types are described in `davit/domain/jobs/mongo.py`.

A line that is not UTF-8, not Extended JSON, not a JSON object, a CSV row with the wrong number
of values or a value its column type refuses, or a document the server refuses, fails the run
with `BadRecord`: the file, the line number and the reason. Records before it are imported.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bson import ObjectId, json_util
from bson.son import SON
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError

from davit.adapters.mongo.client import Server
from davit.adapters.mongo.textvalues import MISSING, RELAXED, Columns, get_path
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, run_steps
from davit.domain.errors import PermanentError, SourceMissing
from davit.domain.jobs import MongoImportJob
from davit.domain.namespaces import split_ns
from davit.domain.ports import RunContext

IMPORT = "import"
GROUP = 50  # writes per command (FerretDB 1.24 never answers an update command of 100 or more)
DUPLICATE_KEY = 11000


class BadRecord(PermanentError):
    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}: line {line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class _Lines:
    """The file's lines from a byte offset, keeping the offset and line number after the last one read."""

    def __init__(self, path: Path, fh: IO[bytes], offset: int, line: int) -> None:
        self.path = path
        self.fh = fh
        self.offset = offset
        self.line = line
        fh.seek(offset)

    def __iter__(self) -> Iterator[str]:
        while raw := self.fh.readline():
            self.line += 1
            self.offset += len(raw)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRecord(self.path, self.line, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


Record = tuple[dict[str, Any], int, int, int]  # document, its (first) line, offset and line after it


class MongoImportWork(RunWork[MongoImportJob]):
    def __init__(self, inputs: RunInputs[MongoImportJob]) -> None:
        super().__init__(inputs)
        spec = self.spec
        self.server = Server(spec.target.uri_env, spec.target.uri_file, f"mongo.import {spec.name}")
        self.path = Path(spec.input.path)
        self.oid_time = 0

    def plan(self) -> list[str]:
        return [IMPORT]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        if not self.path.is_file():
            raise SourceMissing(str(self.path), "no such file")
        info = self.server.ping()
        self.server.close()
        return {"input": str(self.path), "bytes": self.path.stat().st_size, **info}

    def run(self, ctx: RunContext) -> None:
        try:
            run_steps(ctx, [Step(IMPORT, self._import)])
        finally:
            self.server.close()  # a no-op when the step was done already: no client was made

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(IMPORT) or {}
        return {"input": str(self.path), "documents": cursor.get("docs", 0), "duplicates": cursor.get("duplicates", 0)}

    # --- reading -------------------------------------------------------------------------------

    def _records(self, fh: IO[bytes], offset: int, line: int) -> Iterator[Record]:
        if self.spec.input.format == "csv":
            yield from self._csv_records(fh, offset, line)
            return
        lines = _Lines(self.path, fh, offset, line)
        for text in lines:
            if not text.strip():
                continue
            try:
                doc = json_util.loads(text, json_options=RELAXED)
            except Exception as exc:  # json_util raises several types for bad Extended JSON
                raise BadRecord(self.path, lines.line, f"not Extended JSON: {str(exc)[:200]}") from None
            if not isinstance(doc, dict):
                raise BadRecord(self.path, lines.line, f"a JSON {type(doc).__name__}, not an object")
            yield dict(doc), lines.line, lines.offset, lines.line

    def _csv_records(self, fh: IO[bytes], offset: int, line: int) -> Iterator[Record]:
        inp = self.spec.input
        names = list(inp.fields)
        if not names:
            head = _Lines(self.path, fh, 0, 0)
            names = next(csv.reader(head), [])
            if not names:
                return
            offset, line = max(offset, head.offset), max(line, head.line)
        try:
            columns = Columns(names, inp.columns_have_types, inp.ignore_blanks)
        except ValueError as exc:
            raise BadRecord(self.path, 1, f"column names: {exc}") from None
        lines = _Lines(self.path, fh, offset, line)
        rows = csv.reader(lines, strict=True)
        while True:
            first = lines.line + 1
            try:
                row = next(rows, None)
            except csv.Error as exc:
                raise BadRecord(self.path, first, f"not CSV: {exc}") from None
            if row is None:
                return
            if not row:
                continue
            try:
                yield columns.document(row), first, lines.offset, lines.line
            except ValueError as exc:
                raise BadRecord(self.path, first, str(exc)) from None

    # --- writing -------------------------------------------------------------------------------

    def _import(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(IMPORT)
        if cursor is None:
            cursor = {"offset": 0, "line": 0, "docs": 0, "duplicates": 0, "oid_time": int(time.time())}
            ctx.checkpoint(IMPORT, cursor)  # the ObjectIds of a redone batch must come out the same
        self.oid_time = cursor["oid_time"]
        docs, dups = cursor["docs"], cursor["duplicates"]
        db, coll = split_ns(self.spec.target.namespace)
        collection = self.server.client[db][coll]
        batch: list[tuple[dict[str, Any], int]] = []
        with open(self.path, "rb") as fh:
            end = (cursor["offset"], cursor["line"])
            for doc, line, offset, after in self._records(fh, cursor["offset"], cursor["line"]):
                batch.append((doc, line))
                end = (offset, after)
                if len(batch) >= self.spec.batch_docs:
                    dups += self._write(collection, batch)
                    docs += len(batch)
                    batch = []
                    self._checkpoint(ctx, cursor, end, docs, dups)
                    ctx.check_stop()
            if batch:
                dups += self._write(collection, batch)
                docs += len(batch)
            self._checkpoint(ctx, cursor, end, docs, dups)
        return {"documents": docs, "duplicates": dups, "lines": end[1]}

    @staticmethod
    def _checkpoint(ctx: RunContext, cursor: dict[str, Any], end: tuple[int, int], docs: int, dups: int) -> None:
        ctx.checkpoint(
            IMPORT,
            {**cursor, "offset": end[0], "line": end[1], "docs": docs, "duplicates": dups},
            bytes_done=end[0],
            items_done=docs,
        )

    def _object_id(self, line: int) -> ObjectId:
        digest = hashlib.sha256(f"{self.run_id}:{line}".encode()).digest()
        return ObjectId(self.oid_time.to_bytes(4, "big") + digest[:8])

    def _inserted(self, doc: dict[str, Any], line: int) -> dict[str, Any]:
        return doc if "_id" in doc else {"_id": self._object_id(line), **doc}

    def _op(self, doc: dict[str, Any], line: int) -> Any:
        tgt = self.spec.target
        key = SON((f, get_path(doc, f)) for f in tgt.upsert_fields)
        if any(v is MISSING for v in key.values()):
            return InsertOne(self._inserted(doc, line))
        if tgt.mode == "upsert":
            return ReplaceOne(key, doc, upsert=True)
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return UpdateOne(key, {"$set": fields} if fields else {"$setOnInsert": dict(key)}, upsert=True)

    def _write(self, collection: Collection[Any], batch: list[tuple[dict[str, Any], int]]) -> int:
        """Write one batch; the duplicate `_id`s met (a redone batch's, or already in the target)."""
        dups = 0
        size = len(batch) if self.spec.target.mode == "insert" else GROUP
        groups = [batch[i : i + size] for i in range(0, len(batch), size)]
        for group in groups:
            try:
                if self.spec.target.mode == "insert":
                    collection.insert_many([self._inserted(d, n) for d, n in group], ordered=False)
                else:
                    collection.bulk_write([self._op(d, n) for d, n in group], ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
                if other:
                    first = other[0]
                    line = group[first.get("index", 0)][1]
                    raise BadRecord(
                        self.path,
                        line,
                        f"refused by {self.spec.target.namespace}: "
                        f"{self.server.redact(str(first.get('errmsg')))} (code {first.get('code')}; "
                        f"{len(other)} refused in its batch)",
                    ) from exc
                dups += len(errors)
            except PyMongoError as exc:
                with self.server.errors(f"writing to {self.spec.target.namespace}"):
                    raise exc
        return dups

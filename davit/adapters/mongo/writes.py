"""How a mongo.restore's chunks reach the server: the `insert` and `upsert` write strategies.

A chunk's documents go in batches of about `batch_kib`. `insert` sends an unordered
`insert_many` of the raw documents and tolerates a duplicate `_id` (code 11000) only where the
document is present already (a chunk redone after a kill inserts nothing twice); a duplicate
on another unique index is a conflict naming that index. `upsert` replaces by `_id` in
commands small enough for FerretDB. A connection the server closes on every retry of one
batch while it still answers a ping is a permanent failure naming the collection (FerretDB
closes the connection on a BSON type it cannot store); a server that stops answering is
retryable. Kept apart from `restore.py`, which plans the steps and keeps their checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure, PyMongoError

from davit.adapters.mongo.client import MongoConflict, MongoRefused, MongoUnreachable, Server
from davit.adapters.mongo.rawbson import doc_id, id_to_json
from davit.domain.errors import PermanentError

DUPLICATE_KEY = 11000
UNIQUE_BROKEN = "UNIQUE constraint failed"  # FerretDB's SQLite message when a replacement breaks a unique index
WRITE_ATTEMPTS = 3
UPSERT_OPS = 50  # replacements per command: FerretDB 1.24 never answers an update command of 100 or more
UPSERT_BYTES = 8 << 20  # documents per update command, which must stay under the 16 MiB a command may have


class ChunkWrites:
    """The write strategy of one restore (`mode` "insert" or "upsert"), shared by its writer threads."""

    def __init__(self, server: Server, mode: str, batch_bytes: int) -> None:
        self.server = server
        self.mode = mode
        self.batch_bytes = batch_bytes

    def write(self, coll: Collection[Any], dst: str, raw: list[RawBSONDocument], chunk: int) -> tuple[int, int]:
        """Write chunk #`chunk` of `dst` in batches: (documents the server acknowledged as written
        or present, duplicate `_id`s found present). Called from the writer threads."""
        acked = dups = 0
        for batch in _runs(raw, self.batch_bytes):
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    written, found = self._write_batch(coll, dst, batch)
                    acked += written
                    dups += found
                    break
                except AutoReconnect as exc:
                    try:
                        self.server.ping()
                    except MongoUnreachable:
                        raise
                    if attempt == WRITE_ATTEMPTS:
                        raise PermanentError(
                            f"{dst}: the target closed the connection on each of {WRITE_ATTEMPTS} attempts to write "
                            f"a batch of chunk #{chunk} while still answering pings; the batch likely holds a "
                            f"BSON type the target cannot store (FerretDB: decimal128, minKey/maxKey, "
                            f"JavaScript code, ...): {self.server.redact(str(exc))}"
                        ) from exc
        return acked, dups

    def _write_batch(self, coll: Collection[Any], dst: str, batch: list[RawBSONDocument]) -> tuple[int, int]:
        """Write one batch: (documents the server acknowledged as written or present, duplicates)."""
        try:
            if self.mode == "upsert":
                return sum(self._upsert(coll, dst, group) for group in _runs(batch, UPSERT_BYTES, UPSERT_OPS)), 0
            inserted = coll.bulk_write([InsertOne(d) for d in batch], ordered=False).inserted_count
            return inserted, 0
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if other or exc.details.get("writeConcernErrors"):
                first = other[0] if other else exc.details["writeConcernErrors"][0]
                raise MongoRefused(
                    f"{dst}: the target refused {len(other) or 1} document(s): "
                    f"{self.server.redact(str(first.get('errmsg')))} (code {first.get('code')})"
                ) from exc
            self._check_duplicates(coll, dst, errors, batch)
            return int(exc.details.get("nInserted", 0)) + len(errors), len(errors)
        except AutoReconnect:
            raise
        except PyMongoError as exc:
            with self.server.errors(f"writing to {dst}"):
                raise exc

    def _check_duplicates(
        self, coll: Collection[Any], dst: str, errors: list[dict[str, Any]], batch: list[RawBSONDocument]
    ) -> None:
        """Duplicate-key errors of an insert are tolerated only where the `_id` is present already (a
        redone chunk): the same code on another unique index means a document was not restored.
        MongoDB says which index (`keyPattern`, or `index:` in the message); where the server does
        not (FerretDB) and the target has a unique index besides `_id`, the batch's documents are
        looked up by `_id`: each must be there now."""
        unnamed = []
        for error in errors:
            errmsg = str(error.get("errmsg", ""))
            pattern = error.get("keyPattern")
            if pattern is not None:
                if dict(pattern) != {"_id": 1}:
                    raise self._conflict(coll, dst, errmsg, "insert")
            elif " index: " in errmsg:
                if errmsg.split(" index: ", 1)[1].split()[0] != "_id_":
                    raise self._conflict(coll, dst, errmsg, "insert")
            else:
                unnamed.append(errmsg)
        if not unnamed:
            return
        with self.server.errors(f"listing the indexes of {dst}"):
            if not self._unique_indexes(coll):
                return
        ids = [doc_id(d.raw) for d in batch]
        with self.server.errors(f"checking the duplicates met in {dst}"):
            present = {id_to_json(doc_id(d.raw)) for d in coll.find({"_id": {"$in": ids}}, {"_id": 1})}
        if any(id_to_json(i) not in present for i in ids):
            raise self._conflict(coll, dst, unnamed[0], "insert")

    def _unique_indexes(self, coll: Collection[Any]) -> list[str]:
        return sorted(
            str(i["name"])
            for i in coll.database.get_collection(coll.name).list_indexes()
            if i.get("unique") and i.get("name") != "_id_"
        )

    def _upsert(self, coll: Collection[Any], dst: str, group: list[RawBSONDocument]) -> int:
        """Replace by `_id`, inserting what is missing: the documents the server matched or inserted.

        The `update` command is sent as is rather than through `bulk_write`: FerretDB answers an
        upsert that breaks a unique index with write errors but without `n`/`nModified`, on which
        pymongo's `bulk_write` fails with a `KeyError`. A unique index other than `_id` holding a
        value of the source already is a conflict an operator must settle: a permanent failure."""
        updates = [{"q": {"_id": doc_id(d.raw)}, "u": d, "upsert": True} for d in group]
        try:
            reply = coll.database.command({"update": coll.name, "updates": updates, "ordered": False})
        except OperationFailure as exc:
            errmsg = str((exc.details or {}).get("errmsg", exc))
            if exc.code == DUPLICATE_KEY or UNIQUE_BROKEN in errmsg:  # FerretDB: replacing an existing document
                raise self._conflict(coll, dst, errmsg) from exc
            raise
        errors = reply.get("writeErrors") or []
        if errors:
            first = errors[0]
            if first.get("code") == DUPLICATE_KEY:
                raise self._conflict(coll, dst, str(first.get("errmsg")))
            raise MongoRefused(
                f"{dst}: the target refused {len(errors)} replacement(s): "
                f"{self.server.redact(str(first.get('errmsg')))} (code {first.get('code')})"
            )
        if reply.get("writeConcernError"):
            problem = reply["writeConcernError"]
            raise MongoRefused(
                f"{dst}: the target did not confirm replacements: "
                f"{self.server.redact(str(problem.get('errmsg')))} (code {problem.get('code')})"
            )
        return int(reply.get("n", 0))

    def _conflict(self, coll: Collection[Any], dst: str, errmsg: str, action: str = "upsert") -> MongoConflict:
        """Name the unique index: the one the server's message names, else every one the target has
        besides `_id` (FerretDB names none, or its SQLite name). The rest of the server's message is
        left out: it quotes the duplicate values, which are the operator's data."""
        try:
            unique = self._unique_indexes(coll)
        except PyMongoError:
            unique = []
        names = [n for n in unique if n in errmsg] or unique
        index = f"unique index {', '.join(names)}" if names else "a unique index"
        return MongoConflict(
            self.server.redact(
                f"{dst}: {action} refused by the target's {index}: a document of the source holds a value that another "
                f"document of the target, with another _id, holds already; remove or change that document in the "
                f"target, or restore with drop = true"
            )
        )


def _runs(docs: list[RawBSONDocument], max_bytes: int, max_docs: int | None = None) -> Iterator[list[RawBSONDocument]]:
    """`docs` in order, in runs of at most `max_bytes` (a larger document alone) and `max_docs`."""
    run: list[RawBSONDocument] = []
    size = 0
    for doc in docs:
        if run and (len(run) == max_docs or size + len(doc.raw) > max_bytes):
            yield run
            run, size = [], 0
        run.append(doc)
        size += len(doc.raw)
    if run:
        yield run

"""Bringing an existing mongodump directory into the repository as a snapshot of a job.

Each `.bson` (or `.bson.gz`) file is cut into chunks of whole documents, stored like a
backup's chunks, and the collection's `metadata.json` is kept in canonical Extended JSON; the
snapshot is published only once every pack is durable, so an interrupted import leaves no
snapshot (its sealed chunks are reused by the next attempt). People coming from mongodump
keep their old backups: `mongo.restore` then treats them like any other snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from davit.adapters.mongo.dumpdir import list_dump
from davit.adapters.mongo.layout import CollectionEntry, meta_from_text, meta_to_text, tree_zst
from davit.adapters.mongo.rawbson import BadBson
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import PermanentError, SourceMissing

CHUNK = 1 << 20


def import_mongodump(repo: Repository, root: Path, job: str, snapshot_id: str, tuning: Tuning) -> SnapshotInfo:
    try:
        collections = list_dump(root)
    except OSError as exc:
        raise SourceMissing(str(root), str(exc)) from exc
    if not collections:
        raise SourceMissing(str(root), "no DB/COLL.bson files in it")
    entries = []
    stored = 0
    with repo.locked(exclusive=False):
        writer = ChunkWriter(repo, tuning)
        try:
            for coll in collections:
                try:
                    meta = meta_to_text(meta_from_text(coll.meta_text()))
                except ValueError as exc:
                    raise PermanentError(f"{coll.meta}: not a mongodump metadata file: {exc}") from exc
                entry = CollectionEntry(ns=coll.ns, meta=meta)
                try:
                    for chunk, count, _last in coll.chunks(CHUNK):
                        entry.chunks.append(writer.put(chunk))
                        entry.docs += count
                        entry.size += len(chunk)
                        if writer.checkpoint_due():
                            writer.seal()
                except BadBson as exc:
                    raise PermanentError(f"{coll.bson}: not a mongodump .bson file: {exc}") from exc
                entries.append(entry)
            writer.seal()
            stored = writer.bytes_stored
        except BaseException:
            writer.abort()
            raise
        stats = {
            "collections": len(entries),
            "documents": sum(e.docs for e in entries),
            "bytes": sum(e.size for e in entries),
            "chunk_refs": sum(len(e.chunks) for e in entries),
            "bytes_stored": stored,
        }
        manifest = {
            "id": snapshot_id,
            "job": job,
            "kind": "mongo",
            "run_id": "",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {"mongodump": str(root)},
            "parent": None,
            "stats": stats,
        }
        return repo.publish_snapshot(manifest, tree_zst(entries, tuning.compression_level))

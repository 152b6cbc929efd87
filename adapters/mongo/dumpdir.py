"""mongodump's directory format, read and written without decoding a document.

`DIR/DB/COLL.bson` is the collection's documents as concatenated BSON; `DIR/DB/COLL.metadata.json`
its options, indexes, uuid, collectionName and type in canonical Extended JSON; with gzip both
names end in `.gz`. Reading cuts the `.bson` stream into chunks of whole documents (the same
cut every time, so "chunks done" is a cursor); writing copies chunks in order, to a temporary
name renamed into place, so a half-written export never looks complete.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from adapters.mongo.layout import meta_to_text
from adapters.mongo.rawbson import chunks_of, read_docs
from adapters.repository.fsutil import fsync_dir

BSON, META = ".bson", ".metadata.json"


@dataclass(frozen=True)
class DumpCollection:
    ns: str
    bson: Path
    meta: Path | None

    def meta_text(self) -> str:
        """The metadata.json text, or an empty collection's if the dump has none."""
        if self.meta is None:
            coll = self.ns.split(".", 1)[1]
            return meta_to_text({"options": {}, "indexes": [], "collectionName": coll, "type": "collection"})
        with _open_read(self.meta) as fh:
            return fh.read().decode()

    def chunks(self, limit: int) -> Iterator[tuple[bytes, int, bytes]]:
        """(chunk, documents, last document) in file order."""
        with _open_read(self.bson) as fh:
            yield from chunks_of(read_docs(fh), limit)


def _open_read(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb", buffering=1 << 20)


def list_dump(root: Path) -> list[DumpCollection]:
    """The collections of a mongodump directory, sorted by namespace; system collections skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    found = []
    for db_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(db_dir.iterdir()):
            name = path.name
            gz = name.endswith(".gz")
            base = name[:-3] if gz else name
            if not base.endswith(BSON) or base.endswith(META):
                continue
            coll = base[: -len(BSON)]
            if coll.startswith("system."):
                continue
            meta = db_dir / (coll + META + (".gz" if gz else ""))
            if not meta.exists():
                meta = db_dir / (coll + META)
            found.append(DumpCollection(f"{db_dir.name}.{coll}", path, meta if meta.exists() else None))
    return sorted(found, key=lambda c: c.ns)


def write_collection(root: Path, ns: str, meta_text: str, chunks: Iterable[bytes], compress: bool) -> int:
    """Write one collection's `.bson` and `.metadata.json` (gzip-compressed if asked); bytes written."""
    db, coll = ns.split(".", 1)
    folder = root / db
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    total = 0
    for name, parts in ((coll + BSON + suffix, chunks), (coll + META + suffix, [meta_text.encode()])):
        final = folder / name
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as raw:
            out = cast(IO[bytes], gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else raw)
            for part in parts:
                out.write(part)
                total += len(part)
            if compress:
                out.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    fsync_dir(folder)
    return total

"""Bringing a pg_dump archive into the repository as a snapshot of a job, in postgres.backup's
layout, so postgres.restore restores it: `davit import pgdump`. A directory archive (`pg_dump
-Fd`, plain or gzip data files) or a custom archive file (`pg_dump -Fc`, plain or zlib).

The archive's entries split in two: the schema (every entry but the data ones) becomes the
custom archive of no data that a backup stores (davit/adapters/postgres/archive.py); the data
entries become units: each `TABLE DATA` file (its COPY text, without pg_dump's `\\.` end
marker) a table unit, with its columns from the entry's COPY statement; `SEQUENCE SET` values
the schema's sequences; `MATERIALIZED VIEW DATA` the views to refresh; the large objects
(`blobs.toc` and its `blob_OID.dat` files, or a custom archive's blobs block) a unit of them.
A custom archive's data is read in one pass over its blocks (pg_backup_custom.c: a kind byte,
the entry's dump id, then chunks each preceded by its length, a zero length ending them; one
zlib stream per table and per large object when compressed); a large object of a custom
archive is spooled to a private temporary file first, since the snapshot records its length
before its bytes. Data is cut by the repository's chunker as it is read (nothing is held
whole), and the snapshot is published only once every pack is durable: an interrupted import
leaves no snapshot.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from davit.adapters.postgres.archive import (
    BLOCK_BLOBS,
    BLOCK_DATA,
    FORMAT_CUSTOM,
    Archive,
    ArchiveError,
    Entry,
    Header,
    custom_schema_archive,
    read_archive,
    read_int,
)
from davit.adapters.postgres.backup import _Reader
from davit.adapters.postgres.layout import LO_HEADER, Unit, lo_path, schema_path, table_path, tree_zst
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import PermanentError, SourceMissing

DATA_KINDS = {b"TABLE DATA", b"SEQUENCE SET", b"BLOBS", b"BLOB", b"MATERIALIZED VIEW DATA"}
SETVAL = re.compile(rb",\s*(-?\d+),\s*(true|false)\);\s*$")
COPY = re.compile(rb"^COPY .*? \((.*)\) FROM stdin;\s*$", re.S)
END = re.compile(rb"(?:^|\n)\\\.\n*$")
READ = 1 << 20
HELD = 64  # bytes kept back at a data file's end, where pg_dump's end marker is


def import_pgdump(repo: Repository, root: Path, job: str, snapshot_id: str, tuning: Tuning, db: str | None) -> SnapshotInfo:
    """Import directory archive `root` as snapshot `snapshot_id` of `job`; its database is
    named `db`, else as in the archive."""
    with contextlib.ExitStack() as stack:
        archive, items = _open_archive(root, stack)
        return _import(repo, root, archive, items, job, snapshot_id, tuning, db)


def _import(
    repo: Repository,
    root: Path,
    archive: Archive,
    items: Iterator[Any],
    job: str,
    snapshot_id: str,
    tuning: Tuning,
    db: str | None,
) -> SnapshotInfo:
    name = db or (archive.header.dbname or b"").decode()
    if not name:
        raise PermanentError(f"{root}: the archive names no database: give --database")
    schema_entries = _schema_entries(archive.entries)
    schema = Unit(schema_path(name), _schema_pg(name, archive, schema_entries))
    units: list[Unit] = [schema]
    with repo.locked(exclusive=False):
        writer = ChunkWriter(repo, tuning)
        chunker = repo.chunker(tuning.chunk_size)

        def store(unit: Unit, blocks: Iterator[bytes]) -> Unit:
            for chunk in chunker.cut(_Reader(blocks)):
                unit.chunks.append(writer.put(chunk))
                unit.size += len(chunk)
                if writer.checkpoint_due():
                    writer.seal()
            return unit

        try:
            store(schema, iter([custom_schema_archive(Archive(archive.header, schema_entries))]))
            for kind, entry, data in items:
                if kind == "table":
                    units.append(_table(f"{root}, table", name, entry, data, store))
                else:
                    units.append(_blobs(name, data, store))
            writer.seal()
            stored = writer.bytes_stored
        except BaseException:
            writer.abort()
            raise
        tables = [u for u in units if u.kind == "table"]
        stats = {
            "databases": 1,
            "tables": len(tables),
            "rows": sum(int(u.pg["rows"]) for u in tables),
            "chunk_refs": sum(len(u.chunks) for u in units),
            "bytes_stored": stored,
        }
        manifest = {
            "id": snapshot_id,
            "job": job,
            "kind": "postgres",
            "run_id": "",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "pgdump": str(root),
                "databases": [name],
                "server_version": (archive.header.remote_version or b"").decode(errors="replace"),
                "consistent": {name: True},
            },
            "parent": None,
            "stats": stats,
        }
        return repo.publish_snapshot(manifest, tree_zst(units, tuning.compression_level))


def _open_archive(root: Path, stack: contextlib.ExitStack) -> tuple[Archive, Iterator[Any]]:
    """The archive's entries and its data, as ("table", entry, blocks) and ("blobs", entry,
    blobs) items, from a directory archive or a custom archive file."""
    if root.is_dir():
        try:
            data = (root / "toc.dat").read_bytes()
        except OSError as exc:
            raise SourceMissing(str(root), f"no toc.dat in it ({exc.strerror}): not a pg_dump -Fd directory") from exc
        archive = read_archive(data, str(root / "toc.dat"))
        return archive, _directory_items(root, archive)
    fh = stack.enter_context(open(os.open(root, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb"))  # noqa: SIM115 (closed by the stack)
    archive = read_archive(fh, str(root))
    if archive.header.fmt != FORMAT_CUSTOM:
        raise ArchiveError(
            f"{root}: a pg_dump archive of format {archive.header.fmt}: import a directory (-Fd) or custom (-Fc) one"
        )
    return archive, _custom_items(fh, archive, str(root))


def _directory_items(root: Path, archive: Archive) -> Iterator[Any]:
    for entry in archive.entries:
        if entry.desc == b"TABLE DATA":
            with _open(root, entry.filename or b"") as fh:
                yield "table", entry, iter(lambda: fh.read(READ), b"")
        elif entry.desc == b"BLOBS":
            yield "blobs", entry, _directory_blobs(root, entry)


def _custom_items(fh: IO[bytes], archive: Archive, where: str) -> Iterator[Any]:
    """A custom archive's data blocks in file order; each item's data is read to its end
    before the next block is looked at, whether the caller read it all or not."""
    header = archive.header
    if header.compression not in (0, -1, *range(1, 10)) or (header.version[:2] >= (1, 15) and header.compression > 1):
        raise ArchiveError(f"{where}: compression {header.compression} is not one davit reads (none or gzip)")
    by_id = {e.dump_id: e for e in archive.entries}
    while kind := fh.read(1):
        entry = by_id.get(read_int(fh, header, where))
        if kind[0] == BLOCK_DATA:
            blocks = _inflated(_pieces(fh, header, where), header.compression != 0, where)
            if entry is not None and entry.desc == b"TABLE DATA":
                yield "table", entry, blocks
            for _ in blocks:
                pass
        elif kind[0] == BLOCK_BLOBS:
            blobs = _custom_blobs(fh, header, where)
            yield "blobs", entry, blobs
            for _ in blobs:
                pass
        else:
            raise ArchiveError(f"{where}: a data block of unknown kind {kind[0]} (not a pg_dump custom archive, or damaged)")


def _pieces(fh: IO[bytes], header: Header, where: str) -> Iterator[bytes]:
    while size := read_int(fh, header, where):
        piece = fh.read(size)
        if len(piece) < size:
            raise ArchiveError(f"{where}: the archive ends in the middle of its data (truncated?)")
        yield piece


def _inflated(pieces: Iterator[bytes], compressed: bool, where: str) -> Iterator[bytes]:
    if not compressed:
        yield from pieces
        return
    inflater = zlib.decompressobj()
    try:
        for piece in pieces:
            yield inflater.decompress(piece)
        yield inflater.flush()
    except zlib.error as exc:
        raise ArchiveError(f"{where}: compressed data that does not inflate: {exc}") from exc


def _custom_blobs(fh: IO[bytes], header: Header, where: str) -> Iterator[tuple[int, int, Iterator[bytes]]]:
    while oid := read_int(fh, header, where):
        with tempfile.TemporaryFile() as spool:
            for block in _inflated(_pieces(fh, header, where), header.compression != 0, where):
                spool.write(block)
            size = spool.tell()
            spool.seek(0)
            yield oid, size, iter(lambda: spool.read(READ), b"")


def _schema_entries(entries: list[Entry]) -> list[Entry]:
    """The entries that are not data, nor hang on a data entry (a large object's comment or grant)."""
    dropped = {e.dump_id for e in entries if e.desc in DATA_KINDS}
    return [e for e in entries if e.dump_id not in dropped and not dropped.intersection(e.deps)]


def _schema_pg(db: str, archive: Archive, schema: list[Entry]) -> dict[str, Any]:
    """What a backup records beside its schema archive, read from the archive's entries."""
    text = _text
    sequences, matviews = [], []
    for e in archive.entries:
        if e.desc == b"SEQUENCE SET" and (found := SETVAL.search(e.defn or b"")):
            sequences.append([text(e.namespace), text(e.tag), int(found[1]), found[2] == b"true"])
        elif e.desc == b"MATERIALIZED VIEW DATA":
            matviews.append([text(e.namespace), text(e.tag)])
    tables = []
    for t in (e for e in schema if e.desc == b"TABLE"):
        hanging = [e for e in schema if t.dump_id in e.deps]
        objects = sorted(
            {f"{text(t.tableoid)}:{text(t.oid)}"} | {f"{text(e.tableoid)}:{text(e.oid)}" for e in hanging if e.oid != b"0"}
        )
        owned = sorted(text(e.tag) for e in hanging if e.desc == b"SEQUENCE")
        tables.append([text(t.namespace), text(t.tag), objects, owned])
    database = next((e for e in schema if e.desc == b"DATABASE"), None)
    return {
        "kind": "schema",
        "db": db,
        "sequences": sequences,
        "matviews": matviews,
        "data_only": [],
        "tables": tables,
        "database": {"owner": text(database.owner) if database and database.owner else None, "acl": None},
        "consistent": True,
    }


def _text(value: bytes | None) -> str:
    return (value or b"").decode()


def _columns(entry: Entry, where: str) -> list[str]:
    found = COPY.match(entry.copy or b"")
    if not found:
        raise PermanentError(f"{where}: entry {entry.dump_id} has no COPY statement pg_dump writes")
    names, current, quoted, i = [], "", False, 0
    spec = found[1].decode()
    while i < len(spec):
        ch = spec[i]
        if quoted and ch == '"' and spec[i + 1 : i + 2] == '"':
            current, i = current + '"', i + 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            names.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    names.append(current.strip())
    return [n for n in names if n]


def _open(root: Path, filename: bytes) -> IO[bytes]:
    """A data file of the archive, plain or gzip (`NAME.gz`), never through a symlink."""
    name = filename.decode()
    if "/" in name or name in ("", ".", ".."):
        raise PermanentError(f"{root}: toc.dat names data file {name!r}, which is not a file name in the directory")
    for candidate in (name, name + ".gz"):
        try:
            fd = os.open(root / candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        raw = os.fdopen(fd, "rb")
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if candidate.endswith(".gz") else raw
    raise SourceMissing(str(root), f"data file {name} (or {name}.gz) named by toc.dat is missing")


def _table(where: str, db: str, entry: Entry, data: Iterator[bytes], store: Any) -> Unit:
    schema, table = _text(entry.namespace), _text(entry.tag)
    where = f"{where} {schema}.{table}"
    unit = Unit(table_path(db, schema, table), {"kind": "table", "db": db, "schema": schema, "table": table})
    unit.pg["columns"] = _columns(entry, where)
    rows = 0

    def counted(blocks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal rows
        for block in blocks:
            rows += block.count(b"\n")  # text COPY escapes newlines in values: one per row
            yield block

    store(unit, counted(_without_end(data, where)))
    unit.pg["rows"] = rows
    return unit


def _without_end(data: Iterator[bytes], where: str) -> Iterator[bytes]:
    """A table's COPY text without the `\\.` line (and blank lines) pg_dump ends it with."""
    held = b""
    for block in data:
        held += block
        if len(held) > HELD:
            yield held[:-HELD]
            held = held[-HELD:]
    end = END.search(held)
    if held and end is None:
        raise PermanentError(f"{where}: the data file does not end with pg_dump's end marker (truncated?)")
    if end is not None:
        held = held[: end.start() + (1 if held[end.start() : end.start() + 1] == b"\n" else 0)]
    if held:
        yield held


def _directory_blobs(root: Path, entry: Entry) -> Iterator[tuple[int, int, Iterator[bytes]]]:
    """The large objects blobs.toc lists: (oid, length, bytes) each."""
    with _open(root, entry.filename or b"blobs.toc") as fh:
        listed = [line.split(b" ", 1) for line in fh.read().splitlines() if line.strip()]
    for oid, filename in listed:
        with _open(root, filename) as fh:  # its length first: a gzip one is read twice
            size = sum(len(b) for b in iter(lambda: fh.read(READ), b""))
        with _open(root, filename) as fh:
            yield int(oid), size, iter(lambda: fh.read(READ), b"")


def _blobs(db: str, blobs: Iterator[tuple[int, int, Iterator[bytes]]], store: Any) -> Unit:
    """The large objects, each as a header (oid, length) and its bytes."""
    unit = Unit(lo_path(db), {"kind": "lo", "db": db})
    count = 0

    def stream() -> Iterator[bytes]:
        nonlocal count
        for oid, size, data in blobs:
            yield LO_HEADER.pack(oid, size)
            yield from data
            count += 1

    store(unit, stream())
    unit.pg["rows"] = count
    return unit

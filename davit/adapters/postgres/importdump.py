"""Bringing a pg_dump directory archive (`pg_dump -Fd`, plain or gzip data files) into the
repository as a snapshot of a job, in postgres.backup's layout, so postgres.restore restores it:
`davit import pgdump`.

The archive's entries split in two: the schema (every entry but the data ones) becomes the
custom archive of no data that a backup stores (davit/adapters/postgres/archive.py); the data
entries become units: each `TABLE DATA` file (its COPY text, without pg_dump's `\\.` end
marker) a table unit, with its columns from the entry's COPY statement; `SEQUENCE SET` values
the schema's sequences; `MATERIALIZED VIEW DATA` the views to refresh; `blobs.toc` and its
`blob_OID.dat` files the large objects. Data files are cut by the repository's chunker as they
are read (nothing is held whole), and the snapshot is published only once every pack is
durable: an interrupted import leaves no snapshot. `-Fc` files are refused by name (their data
blocks are not read here; `pg_restore -Fc FILE -Fd` does not exist, but `pg_dump -Fd` does).
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from davit.adapters.postgres.archive import Archive, Entry, custom_schema_archive, read_archive
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
    archive = _read_toc(root)
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
            for entry in archive.entries:
                if entry.desc == b"TABLE DATA":
                    units.append(_table(root, name, entry, store))
                elif entry.desc == b"BLOBS":
                    units.append(_blobs(root, name, entry, store))
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


def _read_toc(root: Path) -> Archive:
    if root.is_file():
        raise PermanentError(f"{root}: a file, not a pg_dump directory archive: dump with `pg_dump -Fd -f DIR` and import DIR")
    try:
        data = (root / "toc.dat").read_bytes()
    except OSError as exc:
        raise SourceMissing(str(root), f"no toc.dat in it ({exc.strerror}): not a pg_dump -Fd directory") from exc
    return read_archive(data, str(root / "toc.dat"))


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


def _table(root: Path, db: str, entry: Entry, store: Any) -> Unit:
    schema, table = _text(entry.namespace), _text(entry.tag)
    where = f"{root}, table {schema}.{table}"
    unit = Unit(table_path(db, schema, table), {"kind": "table", "db": db, "schema": schema, "table": table})
    unit.pg["columns"] = _columns(entry, where)
    rows = 0

    def counted(blocks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal rows
        for block in blocks:
            rows += block.count(b"\n")  # text COPY escapes newlines in values: one per row
            yield block

    with _open(root, entry.filename or b"") as fh:
        store(unit, counted(_without_end(fh, where)))
    unit.pg["rows"] = rows
    return unit


def _without_end(fh: IO[bytes], where: str) -> Iterator[bytes]:
    """A data file's COPY text without the `\\.` line (and blank lines) pg_dump ends it with."""
    held = b""
    while block := fh.read(READ):
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


def _blobs(root: Path, db: str, entry: Entry, store: Any) -> Unit:
    """The large objects blobs.toc lists, each as a header (oid, length) and its bytes."""
    unit = Unit(lo_path(db), {"kind": "lo", "db": db})
    with _open(root, entry.filename or b"blobs.toc") as fh:
        listed = [line.split(b" ", 1) for line in fh.read().splitlines() if line.strip()]
    count = 0

    def stream() -> Iterator[bytes]:
        nonlocal count
        for oid, filename in listed:
            with _open(root, filename) as fh:  # its length first: a gzip one is read twice
                size = sum(len(b) for b in iter(lambda: fh.read(READ), b""))
            yield LO_HEADER.pack(int(oid), size)
            with _open(root, filename) as fh:
                yield from iter(lambda: fh.read(READ), b"")
            count += 1

    store(unit, stream())
    unit.pg["rows"] = count
    return unit

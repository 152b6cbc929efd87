"""A PostgreSQL snapshot's database as a pg_dump directory archive (`pg_dump -Fd`), which
`pg_restore -d NEWDB DIR` restores: `davit export pgdump`.

The snapshot holds, per database, pg_dump's own custom archive of the schema (no data) and
each table's rows as `COPY ... TO STDOUT` text, which is what pg_dump writes in a data file.
So the directory is built from pieces pg_dump made or would make: the schema archive's
entries, unchanged, and for the data the entries pg_dump writes (PostgreSQL's pg_dump.c:
`TABLE DATA` with its COPY statement and the table as dependency, `SEQUENCE SET`, one `BLOB`
per large object and a `BLOBS` entry, `MATERIALIZED VIEW DATA` for the views that were
populated), each in its section (see davit/adapters/postgres/archive.py). Data files are
`ID.dat` (the table's chunks, streamed, then the `\\.` end marker pg_dump writes), `blobs.toc`
and `blob_OID.dat`; `toc.dat` comes last, once every data file is written.

Everything is written below a private temporary directory beside the destination, each file
fsynced, then renamed into place whole: an interrupted export leaves no directory that looks
complete. Files are opened relative to that directory's descriptor, O_EXCL|O_NOFOLLOW.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from davit.adapters.outfile import open_parent
from davit.adapters.postgres.archive import (
    SECTION_DATA,
    SECTION_POST_DATA,
    SECTION_PRE_DATA,
    Archive,
    Entry,
    directory_toc,
    read_archive,
)
from davit.adapters.postgres.layout import LO_HEADER, Unit
from davit.domain.errors import PermanentError, UnsafeName
from davit.domain.names import unsafe_reason

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
END_OF_COPY = b"\\.\n\n\n"  # what pg_dump 15 writes after a table's rows
PIECE = 1 << 20

ReadChunk = Callable[[bytes], bytes]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_databases(dest: Path, per_db: dict[str, list[Unit]], read: ReadChunk, where: str, nested: bool) -> dict[str, Any]:
    """Write each database of `per_db` as a directory archive: `dest` itself (one database,
    `nested` false) or `dest/DB` each. `dest` must not exist; it appears whole or not at all."""
    for db in per_db if nested else ():  # every name first: a hostile one refuses it all, nothing written
        problem = unsafe_reason(db)
        if problem is not None:
            raise UnsafeName(where.removeprefix("snapshot "), db, problem)
    parent = open_parent(dest)  # every step below is relative to it: no link planted above DIR is followed
    try:
        try:
            os.stat(dest.name, dir_fd=parent, follow_symlinks=False)
            raise PermanentError(f"{dest} exists: pg_dump's directory format wants a directory that does not exist yet")
        except FileNotFoundError:
            pass
        tmp = f".{dest.name}.davit-partial-{secrets.token_hex(6)}"
        os.mkdir(tmp, 0o700, dir_fd=parent)
        try:
            stats: dict[str, Any] = {"databases": {}}
            root = os.open(tmp, DIRECTORY, dir_fd=parent)
            try:
                for db, units in per_db.items():
                    if nested:
                        os.mkdir(db, 0o700, dir_fd=root)
                    fd = os.open(db, DIRECTORY, dir_fd=root) if nested else os.dup(root)
                    try:
                        stats["databases"][db] = write_archive(fd, units, read, f"{where}, database {db}")
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                os.fsync(root)
            finally:
                os.close(root)
            os.rename(tmp, dest.name, src_dir_fd=parent, dst_dir_fd=parent)
            os.fsync(parent)
        except BaseException:
            shutil.rmtree(tmp, dir_fd=parent, ignore_errors=True)
            raise
    finally:
        os.close(parent)
    return stats


def write_archive(fd: int, units: list[Unit], read: ReadChunk, where: str) -> dict[str, Any]:
    """One database's units (its schema, tables, large objects) as a directory archive in `fd`."""
    schemas = [u for u in units if u.kind == "schema"]
    if len(schemas) != 1:
        raise PermanentError(f"{where}: the snapshot holds no schema archive for it")
    schema = schemas[0]
    archive = read_archive(b"".join(read(bytes.fromhex(c)) for c in schema.chunks), f"{where}, schema archive")
    pre, post = _split(archive.entries)
    next_id = max((e.dump_id for e in archive.entries), default=0) + 1

    def new_id() -> int:
        nonlocal next_id
        next_id += 1
        return next_id - 1

    data: list[Entry] = []
    rows = 0
    for unit in _in_archive_order([u for u in units if u.kind == "table"], archive.entries):
        entry = _table_data(unit, _find(archive, "TABLE", unit.pg["schema"], unit.pg["table"]), new_id())
        _write_file(fd, entry.filename or b"", _with_end(_chunks(unit, read)))
        data.append(entry)
        rows += int(unit.pg.get("rows", 0))
    for s, name, value, called in schema.pg.get("sequences", []):
        sequence = _find(archive, "SEQUENCE", s, name)
        if sequence is not None:  # its table was left out of the backup
            data.append(_sequence_set(sequence, int(value), bool(called), new_id()))
    blobs: list[int] = []
    for unit in (u for u in units if u.kind == "lo"):
        blobs += _write_blobs(fd, _chunks(unit, read))
    blob_entries = [_blob(oid, new_id()) for oid in blobs]
    if blobs:
        _write_file(fd, b"blobs.toc", iter([b"".join(b"%d blob_%d.dat\n" % (o, o) for o in blobs)]))
        data.append(Entry(new_id(), True, b"0", b"0", b"BLOBS", b"BLOBS", SECTION_DATA, filename=b"blobs.toc"))
    refresh = _refreshes(archive, schema.pg.get("matviews", []), new_id)
    toc = directory_toc(Archive(archive.header, pre + blob_entries + data + post + refresh))
    _write_file(fd, b"toc.dat", iter([toc]))
    return {"tables": sum(1 for e in data if e.desc == b"TABLE DATA"), "rows": rows, "large_objects": len(blobs)}


def _split(entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """The schema's entries before the data (pre-data, and the entries of no section that go
    with them) and from the first post-data entry on: where pg_dump puts its data entries."""
    first_post = next((i for i, e in enumerate(entries) if e.section == SECTION_POST_DATA), len(entries))
    return entries[:first_post], entries[first_post:]


def _find(archive: Archive, desc: str, namespace: str, tag: str) -> Entry | None:
    return next((e for e in archive.entries if e.named(desc, namespace, tag)), None)


def _in_archive_order(tables: list[Unit], entries: list[Entry]) -> list[Unit]:
    order = {(e.namespace, e.tag): i for i, e in enumerate(entries) if e.desc == b"TABLE"}
    return sorted(tables, key=lambda u: order.get((u.pg["schema"].encode(), u.pg["table"].encode()), len(order)))


def _table_data(unit: Unit, table: Entry | None, dump_id: int) -> Entry:
    """pg_dump's TABLE DATA entry; a table whose schema was left out (data only) gets one
    without a dependency, as `pg_dump --data-only -t` writes it."""
    s, t = unit.pg["schema"], unit.pg["table"]
    columns = ", ".join(quote_ident(c) for c in unit.pg["columns"])
    copy = f"COPY {quote_ident(s)}.{quote_ident(t)} ({columns}) FROM stdin;\n".encode()
    return Entry(
        dump_id,
        True,
        b"0",
        table.oid if table else b"0",
        t.encode(),
        b"TABLE DATA",
        SECTION_DATA,
        copy=copy,
        namespace=s.encode(),
        owner=table.owner if table else b"",
        deps=[table.dump_id] if table else [],
        filename=b"%d.dat" % dump_id,
    )


def _sequence_set(sequence: Entry, value: int, called: bool, dump_id: int) -> Entry:
    name = f"{quote_ident((sequence.namespace or b'').decode())}.{quote_ident((sequence.tag or b'').decode())}"
    defn = f"SELECT pg_catalog.setval({quote_literal(name)}, {value}, {'true' if called else 'false'});\n"
    return Entry(
        dump_id,
        False,
        b"0",
        b"0",
        sequence.tag,
        b"SEQUENCE SET",
        SECTION_DATA,
        defn=defn.encode(),
        namespace=sequence.namespace,
        owner=sequence.owner,
        deps=[sequence.dump_id],
    )


def _blob(oid: int, dump_id: int) -> Entry:
    """A large object's entry: created empty in pre-data, its bytes loaded from blobs.toc.
    The snapshot does not keep large objects' owners: the restoring user owns them, as with
    `postgres.restore`."""
    create = b"SELECT pg_catalog.lo_create('%d');\n" % oid
    drop = b"SELECT pg_catalog.lo_unlink('%d');\n" % oid
    return Entry(dump_id, False, b"2613", b"%d" % oid, b"%d" % oid, b"BLOB", SECTION_PRE_DATA, defn=create, drop=drop, owner=b"")


def _refreshes(archive: Archive, populated: list[list[str]], new_id: Callable[[], int]) -> list[Entry]:
    """A MATERIALIZED VIEW DATA entry per populated view, in the archive's (dependency) order,
    each depending on the refresh of every materialized view it reads, directly or through
    views, as pg_dump makes them: `pg_restore -j` refreshes a view only after those."""
    views = [v for v in archive.entries if v.desc == b"MATERIALIZED VIEW"]
    wanted = {(s.encode(), name.encode()) for s, name in populated}
    by_id = {e.dump_id: e for e in archive.entries}
    refresh_of: dict[int, Entry] = {}
    for view in (v for v in views if (v.namespace, v.tag) in wanted):
        entry = _refresh(view, new_id())
        entry.deps += [refresh_of[d].dump_id for d in sorted(_read_views(view, by_id)) if d in refresh_of]
        refresh_of[view.dump_id] = entry
    return list(refresh_of.values())


def _read_views(view: Entry, by_id: dict[int, Entry]) -> set[int]:
    """The materialized views `view` reads, through plain views too (their dump ids)."""
    found: set[int] = set()
    todo = list(view.deps)
    while todo:
        dep = by_id.get(todo.pop())
        if dep is None or dep.dump_id in found or dep.desc not in (b"VIEW", b"MATERIALIZED VIEW"):
            continue
        found.add(dep.dump_id)
        todo += dep.deps
    return found


def _refresh(view: Entry, dump_id: int) -> Entry:
    name = f"{quote_ident((view.namespace or b'').decode())}.{quote_ident((view.tag or b'').decode())}"
    return Entry(
        dump_id,
        False,
        b"0",
        view.oid,
        view.tag,
        b"MATERIALIZED VIEW DATA",
        SECTION_POST_DATA,
        defn=f"REFRESH MATERIALIZED VIEW {name};\n".encode(),
        namespace=view.namespace,
        owner=view.owner,
        deps=[view.dump_id],
    )


def _chunks(unit: Unit, read: ReadChunk) -> Iterator[bytes]:
    for c in unit.chunks:
        yield read(bytes.fromhex(c))


def _with_end(blocks: Iterable[bytes]) -> Iterator[bytes]:
    yield from blocks
    yield END_OF_COPY


def _write_file(dir_fd: int, name: bytes, blocks: Iterable[bytes]) -> None:
    fd = os.open(name, NEW_FILE, 0o600, dir_fd=dir_fd)
    try:
        for block in blocks:
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_blobs(dir_fd: int, blocks: Iterator[bytes]) -> list[int]:
    """The snapshot's large objects (each a header, then its bytes) as blob_OID.dat files,
    streamed piece by piece; their oids in order."""
    stream = _Pieces(blocks)
    oids = []
    while header := stream.read(LO_HEADER.size):
        if len(header) < LO_HEADER.size:
            raise PermanentError("the snapshot's large objects end in the middle of a header")
        oid, size = LO_HEADER.unpack(header)
        _write_file(dir_fd, b"blob_%d.dat" % oid, stream.exactly(size))
        oids.append(oid)
    return oids


class _Pieces:
    """Reads of a given size from an iterator of blocks, holding at most one block."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._held = b""

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if not self._held:
                self._held = next(self._blocks, b"")
                if not self._held:
                    break
            take = self._held[: n - len(out)]
            out += take
            self._held = self._held[len(take) :]
        return bytes(out)

    def exactly(self, size: int) -> Iterator[bytes]:
        left = size
        while left:
            piece = self.read(min(PIECE, left))
            if not piece:
                raise PermanentError("the snapshot's large objects end in the middle of one")
            left -= len(piece)
            yield piece

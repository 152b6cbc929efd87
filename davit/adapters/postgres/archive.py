"""pg_dump's archive header and table of contents, read from a custom archive (`-Fc`) and
written as a directory archive's `toc.dat` (`-Fd`).

Both formats share one layout (PostgreSQL's pg_backup_archiver.c, `WriteHead`/`WriteToc`):
the magic `PGDMP`, the version (major, minor, revision), the sizes of an integer and of an
offset, the format, the compression, the creation time, the database name and two version
strings; then the number of entries and each entry's dump id, whether it has data, catalog
and object oid (as strings), tag, kind (`desc`), section, definition, drop statement, COPY
statement, schema, tablespace, table access method, owner, "false" (with oids), its
dependencies (a list of strings ended by a null string) and then the format's own part: in
a custom archive the data's offset (a flag byte and `offSize` bytes), in a directory archive
the data file's name ("" when none). An integer is a sign byte and `intSize` bytes, least
significant first; a string is its length as an integer (-1: null) and its bytes.

Only what pg_dump 12 to 16 writes is read (archive versions 1.14 and 1.15; the latter stores
the compression as one byte): anything else is refused by name, never guessed at. Strings are
kept as bytes, so names in any encoding are written back unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO

from davit.domain.errors import PermanentError

MAGIC = b"PGDMP"
FORMAT_CUSTOM, FORMAT_DIRECTORY = 1, 3  # the format byte pg_dump 15 writes for -Fc and -Fd
SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA = 1, 2, 3, 4
READABLE_VERSIONS = ((1, 14), (1, 15))
BLOCK_DATA, BLOCK_BLOBS = 1, 3  # a custom archive's data block kinds (pg_backup_archiver.h)
K_OFFSET_NO_DATA = 3  # a custom archive's entry without data


class ArchiveError(PermanentError):
    """A pg_dump archive that cannot be read: names the archive and the reason."""


@dataclass
class Header:
    version: tuple[int, int, int]
    int_size: int
    off_size: int
    fmt: int
    compression: int
    created: list[int]  # seconds, minutes, hours, day, month, year - 1900, isdst
    dbname: bytes | None
    remote_version: bytes | None
    dump_version: bytes | None


@dataclass
class Entry:
    dump_id: int
    has_data: bool
    tableoid: bytes
    oid: bytes
    tag: bytes | None
    desc: bytes | None
    section: int
    defn: bytes | None = None
    drop: bytes | None = None
    copy: bytes | None = None
    namespace: bytes | None = None
    tablespace: bytes | None = None
    tableam: bytes | None = None
    owner: bytes | None = None
    deps: list[int] = field(default_factory=list)
    filename: bytes | None = None  # a directory archive's data file

    def named(self, desc: str, namespace: str, tag: str) -> bool:
        return self.desc == desc.encode() and self.namespace == namespace.encode() and self.tag == tag.encode()


@dataclass
class Archive:
    header: Header
    entries: list[Entry]


class _Reader:
    def __init__(self, source: bytes | IO[bytes], where: str) -> None:
        self.fh = io.BytesIO(source) if isinstance(source, bytes) else source
        self.pos, self.where = 0, where
        self.int_size = 4
        self.off_size = 8

    def take(self, n: int) -> bytes:
        out = self.fh.read(n)
        if len(out) < n:
            raise ArchiveError(
                f"{self.where}: the archive ends early (at byte {self.pos + len(out)}, {n - len(out)} more wanted)"
            )
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> bytes | None:
        size = self.int()
        return None if size < 0 else self.take(size)


def read_archive(source: bytes | IO[bytes], where: str) -> Archive:
    """The header and entries of a custom archive (pg_dump -Fc) or of a directory archive's
    toc.dat; `where` names it in errors. A file is left where the entries end (in a custom
    archive, where its data blocks begin)."""
    r = _Reader(source, where)
    if r.fh.read(len(MAGIC)) != MAGIC:
        raise ArchiveError(f"{where}: not a pg_dump archive (no PGDMP magic)")
    r.pos = len(MAGIC)
    version = (r.byte(), r.byte(), r.byte())
    if version[:2] not in READABLE_VERSIONS:
        raise ArchiveError(
            f"{where}: pg_dump archive version {version[0]}.{version[1]} is not one davit reads "
            "(1.14: PostgreSQL 12-15, 1.15: 16)"
        )
    r.int_size, r.off_size = r.byte(), r.byte()
    fmt = r.byte()
    if fmt not in (FORMAT_CUSTOM, FORMAT_DIRECTORY):
        raise ArchiveError(f"{where}: archive format {fmt} is neither custom (-Fc) nor directory (-Fd)")
    compression = r.byte() if version[:2] >= (1, 15) else r.int()
    created = [r.int() for _ in range(7)]
    header = Header(version, r.int_size, r.off_size, fmt, compression, created, r.str(), r.str(), r.str())
    entries = []
    for _ in range(r.int()):
        entries.append(_read_entry(r, fmt))
    return Archive(header, entries)


def _read_entry(r: _Reader, fmt: int) -> Entry:
    dump_id, has_data = r.int(), bool(r.int())
    tableoid, oid = r.str() or b"0", r.str() or b"0"
    tag, desc, section = r.str(), r.str(), r.int()
    e = Entry(dump_id, has_data, tableoid, oid, tag, desc, section)
    e.defn, e.drop, e.copy, e.namespace, e.tablespace, e.tableam, e.owner = (r.str() for _ in range(7))
    r.str()  # "with oids": always "false" since PostgreSQL 12
    while (dep := r.str()) is not None:
        e.deps.append(int(dep))
    if fmt == FORMAT_CUSTOM:
        r.byte()  # the data's state: none in a schema-only archive
        r.take(r.off_size)
    else:
        e.filename = r.str() or None
    return e


def _int(value: int, size: int) -> bytes:
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(size, "little")


def _str(value: bytes | None, size: int) -> bytes:
    return _int(-1, size) if value is None else _int(len(value), size) + value


def directory_toc(archive: Archive) -> bytes:
    """`archive` as a directory archive's toc.dat, uncompressed (its data files are plain)."""
    return _write(archive, FORMAT_DIRECTORY, lambda e, h: _str(e.filename or b"", h.int_size))


def custom_schema_archive(archive: Archive) -> bytes:
    """`archive` (entries without data) as a custom archive, as `pg_dump -Fc --schema-only`
    writes one: each entry's offset says "no data" (flag 3, zero offset)."""
    if any(e.has_data for e in archive.entries):
        raise ArchiveError("a schema archive holds no data entries")
    return _write(archive, FORMAT_CUSTOM, lambda e, h: bytes([K_OFFSET_NO_DATA]) + bytes(h.off_size))


def _write(archive: Archive, fmt: int, extra: Callable[[Entry, Header], bytes]) -> bytes:
    h = replace(archive.header, fmt=fmt, compression=0)
    n = h.int_size
    out = [MAGIC, bytes([*h.version, h.int_size, h.off_size, h.fmt])]
    out.append(bytes([0]) if h.version[:2] >= (1, 15) else _int(0, n))
    out += [_int(v, n) for v in h.created]
    out += [_str(h.dbname, n), _str(h.remote_version, n), _str(h.dump_version, n), _int(len(archive.entries), n)]
    for e in archive.entries:
        out += [_int(e.dump_id, n), _int(int(e.has_data), n), _str(e.tableoid, n), _str(e.oid, n)]
        out += [_str(e.tag, n), _str(e.desc, n), _int(e.section, n)]
        out += [_str(v, n) for v in (e.defn, e.drop, e.copy, e.namespace, e.tablespace, e.tableam, e.owner)]
        out.append(_str(b"false", n))
        out += [_str(str(d).encode(), n) for d in e.deps]
        out += [_str(None, n), extra(e, h)]
    return b"".join(out)


def read_int(fh: IO[bytes], header: Header, where: str) -> int:
    """One integer of a custom archive's data part."""
    raw = fh.read(1 + header.int_size)
    if len(raw) < 1 + header.int_size:
        raise ArchiveError(f"{where}: the archive ends in the middle of its data (truncated?)")
    value = int.from_bytes(raw[1:], "little")
    return -value if raw[0] else value

"""What a PostgreSQL snapshot holds: one tree line per unit of a database.

A line has the keys of a tree entry (`p`, `t` = "f", `s` bytes, `c` chunk ids in order) so
`davit verify` and retention read it unchanged, plus `pg`: what the unit is.

- `DB/schema`: pg_dump's custom-format archive, schema only (`pg_restore --section=pre-data`
  and `post-data` read it); `pg` carries the sequences' values, the materialized views that
  were populated, and the run's snapshot points for the database.
- `DB/table/SCHEMA.TABLE`: the table's rows as `COPY ... TO STDOUT` text (what pg_dump
  writes in its data entries), columns in `pg.columns`, row count in `pg.rows`.
- `roles` (when the job has `roles = true`): the cluster's roles as one JSON document (see
  davit/adapters/postgres/roles.py); `pg.rows` is their number, `pg.passwords` whether their
  password hashes could be read (only a superuser can).
- `DB/large-objects`: every large object, each as a 16-byte header (oid, length: big-endian
  unsigned 64-bit) followed by its bytes; count in `pg.rows`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

from davit.adapters.sqltree import Line, lines

LO_HEADER = struct.Struct(">QQ")
ROLES_PATH = "roles"


@dataclass
class Unit:
    path: str
    pg: dict[str, Any]
    chunks: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def db(self) -> str:
        return str(self.pg["db"])

    @property
    def kind(self) -> str:
        return str(self.pg["kind"])

    def to_line(self) -> bytes:
        line = {"p": self.path, "t": "f", "m": 0o644, "mt": 0, "u": 0, "g": 0, "s": self.size, "c": self.chunks, "pg": self.pg}
        return json.dumps(line, separators=(",", ":"), sort_keys=True).encode() + b"\n"

    @staticmethod
    def from_line(line: bytes) -> Unit:
        d = json.loads(line)
        return Unit(path=d["p"], pg=d["pg"], chunks=d["c"], size=d["s"])


def schema_path(db: str) -> str:
    return f"{db}/schema"


def table_path(db: str, schema: str, table: str) -> str:
    return f"{db}/table/{qualified(schema, table)}"


def qualified(schema: str, table: str) -> str:
    """`schema.table`, one text per table (in paths and step names): schema `a` with table
    `b.c` and schema `a.b` with table `c` both read `a.b.c`, so a name holding a dot, a double
    quote or a slash is written quoted (`"a"."b.c"`, `"a.b"."c"`). Other names are written as
    before, so the paths of older snapshots and the steps of older runs stay the same."""
    if not any(c in schema or c in table for c in '."/'):
        return f"{schema}.{table}"
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def lo_path(db: str) -> str:
    return f"{db}/large-objects"


def tree_zst(units: Iterable[Unit], level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(b"".join(u.to_line() for u in units))


UNIT_KINDS = ("schema", "table", "lo", "roles")


def read_tree(data: bytes, what: str = "the snapshot") -> Iterator[Unit]:
    """The units of a tree, each line checked first (`davit/adapters/sqltree.py`): a line a
    restore or an export must not act on (a database, schema or table name with NUL or '..', a
    field of the wrong type, a huge or deeply nested line) is refused naming the line and the
    field, before anything is written."""
    for n, d in lines(data, what):
        line = Line(what, n, d)
        pg = line.get("pg", dict)
        kind = line.text("kind", pg)
        if kind not in UNIT_KINDS:
            raise line.refuse("pg.kind", f"is {kind[:40]!r}, not one of {', '.join(UNIT_KINDS)}")
        if kind != "roles":
            line.name("db", pg)  # PostgreSQL allows '/' in a database name: an export nests it safely or refuses it
        if kind == "table":
            line.name("schema", pg)
            line.name("table", pg)
            if "columns" in pg:
                line.texts("columns", pg)
        if kind in ("table", "lo", "roles") and "rows" in pg:
            line.count("rows", pg)
        yield Unit(path=line.text("p"), pg=pg, chunks=line.chunks(), size=line.count("s"))

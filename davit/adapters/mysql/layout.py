"""What a MariaDB/MySQL snapshot holds: one JSON line per database and per table.

The lines have the keys of a tree entry (`treeformat.py`: `p` path, `t` = "f", `s` bytes,
`c` chunk ids in order), so `davit verify`, pruning and retention read them unchanged, plus
`mysql`: what the line is.

- `database` (`p` = the database's name): its `CREATE DATABASE` statement (character set and
  collation) and its other objects in creation order (`objects`: views, then functions and
  procedures, then triggers, then events, each with the `sql_mode` and character set it was
  created under), which a restore creates after the data.
- `table` (`p` = `DB/TABLE`): `create` (SHOW CREATE TABLE, without the database's name, or
  null for a `data_only` table), `engine`, `columns` (what the rows hold: every column but
  generated ones, invisible ones included), `rows`, `data` (false: `schema_only`), and the
  chunks. Each chunk is one `INSERT INTO `table` (columns) VALUES (...),(...);` statement of
  whole rows in primary-key order, so a table's data is its chunks in order, a script that
  `mariadb` replays after `USE db` (the database is not named in it: a restore may rename it).
  A table imported from a mariadb-dump script (`davit import sql`) also has `load_mode`: the
  `sql_mode` the script's INSERTs ran under (mariadb-dump sets a non-strict one, in which a
  value given for a generated column is ignored), which a restore loads them under; a backup's
  table has none (the restore's strict mode). A system-versioned table's line has `history`:
  its row start and end columns, which its rows hold (every version of each row); older
  snapshots' lines lack it.
- `users` (`p` = "(users)"): `CREATE USER` and `GRANT` statements, when the job kept them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

from davit.adapters.sqltree import Line, lines

KIND = "mysql"  # the manifest's kind
USERS_PATH = "(users)"


@dataclass
class TableEntry:
    db: str
    table: str
    create: str | None
    engine: str
    columns: list[str]
    data: bool = True
    rows: int = 0
    size: int = 0
    chunks: list[str] = field(default_factory=list)
    load_mode: str | None = None  # imported scripts: the sql_mode their INSERTs ran under
    history: list[str] | None = None  # system-versioned: every version kept, [row start, row end] columns

    @property
    def name(self) -> str:
        """`db.table`, as include/exclude patterns name it (two tables may read alike: `key`)."""
        return f"{self.db}.{self.table}"

    @property
    def key(self) -> str:
        return qualified(self.db, self.table)

    def to_dict(self) -> dict[str, Any]:
        return {
            **_entry(f"{self.db}/{self.table}", self.size, self.chunks),
            "mysql": "table",
            "db": self.db,
            "table": self.table,
            "create": self.create,
            "engine": self.engine,
            "columns": self.columns,
            "data": self.data,
            "rows": self.rows,
            **({"load_mode": self.load_mode} if self.load_mode is not None else {}),
            **({"history": self.history} if self.history is not None else {}),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TableEntry:
        return TableEntry(
            db=d["db"],
            table=d["table"],
            create=d["create"],
            engine=d["engine"],
            columns=list(d["columns"]),
            data=bool(d["data"]),
            rows=int(d["rows"]),
            size=int(d["s"]),
            chunks=list(d["c"]),
            load_mode=d.get("load_mode"),
            history=d.get("history"),
        )


@dataclass
class DatabaseEntry:
    db: str
    create: str
    objects: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**_entry(self.db, 0, []), "mysql": "database", "db": self.db, "create": self.create, "objects": self.objects}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DatabaseEntry:
        return DatabaseEntry(db=d["db"], create=d["create"], objects=list(d["objects"]))


@dataclass
class UsersEntry:
    statements: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {**_entry(USERS_PATH, 0, []), "mysql": "users", "statements": self.statements}


Entry = TableEntry | DatabaseEntry | UsersEntry


def qualified(db: str, table: str) -> str:
    """`db.table`, one text per table (step names, keys): database `shop` with table `a.b` and
    database `shop.a` with table `b` both read `shop.a.b`, so a name holding a dot or a
    backquote is written backquoted. Other names as before: older runs' steps stay the same."""
    if not any(c in db or c in table for c in ".`"):
        return f"{db}.{table}"
    return "`" + db.replace("`", "``") + "`.`" + table.replace("`", "``") + "`"


def _entry(path: str, size: int, chunks: list[str]) -> dict[str, Any]:
    return {"p": path, "t": "f", "m": 0o644, "mt": 0, "u": 0, "g": 0, "s": size, "c": chunks}


def tree_zst(entries: Iterable[Entry], level: int = 3) -> bytes:
    lines = sorted((e.to_dict() for e in entries), key=lambda d: str(d["p"]).split("/"))
    text = b"".join(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for d in lines)
    return zstandard.ZstdCompressor(level=level).compress(text)


def read_tree(data: bytes, what: str = "the snapshot") -> Iterator[Entry]:
    """The entries of a tree, each line checked first (`davit/adapters/sqltree.py`): a line a
    restore must not act on (a name with NUL, '/' or '..', a field of the wrong type, a huge or
    deeply nested line) is refused naming the line and the field, before anything is written."""
    for n, d in lines(data, what):
        line = Line(what, n, d)
        kind = line.text("mysql")
        if kind == "table":
            yield _table(line)
        elif kind == "database":
            objects = line.get("objects", list)
            for obj in objects:
                if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
                    raise line.refuse("objects", "holds an object that is not a mapping of texts")
                for key in ("type", "name", "create", "sql_mode", "charset", "collation"):
                    line.text(key, obj)
            yield DatabaseEntry(db=line.name("db", database=True), create=line.text("create"), objects=list(objects))
        elif kind == "users":
            yield UsersEntry(statements=line.texts("statements"))
        else:
            raise line.refuse("mysql", f"is {kind[:40]!r}, not table, database or users")


def _table(line: Line) -> TableEntry:
    load_mode = line.text("load_mode", optional=True)
    return TableEntry(
        db=line.name("db", database=True),
        table=line.name("table"),
        create=line.text("create", optional=True),
        engine=line.text("engine"),
        columns=line.texts("columns"),
        data=bool(line.get("data", bool)),
        rows=line.count("rows"),
        size=line.count("s"),
        chunks=line.chunks(),
        load_mode=load_mode,
        history=line.texts("history") if line.value.get("history") is not None else None,
    )

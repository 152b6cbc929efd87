"""A table's rows read in pages along its unique key, each page one buffered result.

Why not one unbuffered result (`SSCursor`) for the whole table: mysqlclient lets go of the GIL
and takes it back for every row it reads from an unbuffered result. With two tables read at
once (`parallel`), each row then waits for the other thread's Python work to yield the GIL
(up to the 5 ms switch interval, more on a loaded machine): the backup ran on about one core
and at ~0.5x of `mariadb-dump | zstd` (bench/sql.py, README). A buffered result reads a page
with the GIL let go once, then turns its rows into Python values in one go.

The pages are `SELECT ... WHERE key > last ORDER BY key LIMIT n` on the table's primary key
(or first unique NOT NULL key), inside the connection's consistent snapshot: the same rows in
the same order as one `ORDER BY key` result, so the statements, and the chunks, are those of
the unbuffered read byte for byte. `key > last` over several columns is written as the range
optimizer reads it (`a > x OR (a = x AND b > y)`). Only keys whose comparison with a literal
orders exactly as ORDER BY does are read this way (integers and DECIMAL as number literals,
strings in the column's own collation, binary strings as hex, dates and times): FLOAT/DOUBLE
(a value's text may round), ENUM/SET (ordered by position, compared as text), BIT and others
keep the unbuffered read, as do tables without such a key, system-versioned history and
tables of a non-transactional engine (no snapshot holds them still between two pages).

A page holds about `PAGE_BYTES` of rows: the first `FIRST_ROWS` rows, then as many as the
previous page's average row size allows (peak memory stays bounded whatever the rows' size).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from davit.adapters.mysql import literals
from davit.adapters.mysql.client import quote_name

PAGE_BYTES = 4 << 20
FIRST_ROWS = 16
MAX_ROWS = 50_000
NUMBERS = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "year"})
STRINGS = frozenset({"char", "varchar", "binary", "varbinary", "date", "datetime", "timestamp", "time"})
_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?")


def usable(key: Sequence[str] | None, columns: Sequence[tuple[str, str, bool]]) -> bool:
    """Can the rows be paged along `key`: every key column read, and of a type whose literal
    compares as ORDER BY orders (see the module's docstring)?"""
    if not key:
        return False
    types = {name: data_type for name, data_type, _ in columns}
    return all(types.get(k) in NUMBERS or types.get(k) in STRINGS for k in key)


def pages(
    conn: Any,
    select: str,
    key: Sequence[str],
    columns: Sequence[tuple[str, str, bool]],
    build: Callable[[Sequence[Any]], list[bytes]],
) -> Iterator[list[bytes]]:
    """The rows of `select` (a `SELECT cols FROM table`, no WHERE) page by page along `key`,
    each page's rows as `build` makes them. `conn` gives values as the server's bytes."""
    names = [c[0] for c in columns]
    at = [names.index(k) for k in key]
    kinds = [_literal_kind(columns[i][1], columns[i][2]) for i in at]
    quoted = [quote_name(k).encode() for k in key]
    head, order = select.encode(), b" ORDER BY " + b",".join(quoted)
    after, limit = b"", FIRST_ROWS
    cur = conn.cursor()  # buffered: a page read with the GIL let go once
    try:
        while True:
            cur.execute(head + after + order + b" LIMIT %d" % limit)
            rows = cur.fetchall()
            if not rows:
                return
            built = build(rows)
            yield built
            if len(rows) < limit:
                return
            last = rows[-1]
            after = b" WHERE " + _after(quoted, [_literal(kind, last[i]) for kind, i in zip(kinds, at, strict=True)])
            size = sum(map(len, built))
            limit = max(1, min(MAX_ROWS, PAGE_BYTES * len(rows) // max(size, 1)))
    finally:
        cur.close()


def _literal_kind(data_type: str, has_charset: bool) -> str:
    return "number" if data_type in NUMBERS else literals.kind(data_type, has_charset)


def _literal(kind: str, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if kind == "number":
        if not _NUMBER.fullmatch(raw):  # the server's text of a number is always one: never sent otherwise
            raise ValueError(f"not a number: {raw[:40]!r}")
        return raw
    return literals.literal(kind, raw)


def _after(keys: list[bytes], values: list[bytes]) -> bytes:
    """`(keys) > (values)` in key order, as OR-ed ranges the optimizer reads on the key's index."""
    terms = []
    for n in range(len(keys)):
        equal = [keys[i] + b" = " + values[i] for i in range(n)]
        terms.append(b"(" + b" AND ".join([*equal, keys[n] + b" > " + values[n]]) + b")")
    return b" OR ".join(terms)

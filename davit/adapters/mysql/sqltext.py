"""Rows as SQL text: the values of one row as a `(...)` tuple, and rows cut into INSERT statements.

Values arrive as the server's own text (see `client.py`: no converters), so writing them back
is exact whatever the type: NULL as NULL, text (numbers, dates, strings, JSON) as a quoted
literal the server converts back to the column's type, and bytes (binary strings, BLOB, BIT,
spatial values in the server's internal form) as a hex literal, which is what `mariadb-dump
--hex-blob` writes.

Statements are cut where the content says, not at a fixed size: after a row whose hash falls
under a threshold proportional to its length (so a cut comes about every `target` bytes
whatever the row size), at least `minimum` bytes after the last cut, and always before
`limit`. A row inserted or changed in a table moves only the cuts near it: the other
statements (chunks) of an unchanged stretch are byte for byte those of the previous backup,
and the repository stores them once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

from davit.adapters.mysql.client import quote_name, quote_text

_HASH_SPACE = 1 << 32


def sql_value(value: str | bytes | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray):
        return "0x" + value.hex() if value else "X''"
    return quote_text(value)


def sql_row(row: Sequence[str | bytes | None]) -> bytes:
    return ("(" + ",".join(sql_value(v) for v in row) + ")").encode()


def insert_head(table: str, columns: Sequence[str]) -> bytes:
    return f"INSERT INTO {quote_name(table)} ({','.join(quote_name(c) for c in columns)}) VALUES\n".encode()


def statements(head: bytes, rows: Iterable[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """INSERT statements of whole rows (each about `limit / 4` bytes, never more than `limit` unless
    one row alone is larger), and how many rows each holds."""
    target, minimum = max(1, limit // 4), limit // 16
    parts: list[bytes] = []
    size = 0
    for row in rows:
        if parts and size + len(row) + 2 > limit:
            yield head + b",\n".join(parts) + b";\n", len(parts)
            parts, size = [], 0
        parts.append(row)
        size += len(row) + 2
        if size >= minimum and zlib.crc32(row) < _HASH_SPACE * len(row) // target:
            yield head + b",\n".join(parts) + b";\n", len(parts)
            parts, size = [], 0
    if parts:
        yield head + b",\n".join(parts) + b";\n", len(parts)

"""Rows cut into INSERT statements (each row a `(...)` tuple of literals: `literals.py`).

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

from davit.adapters.mysql.client import quote_name

_HASH_SPACE = 1 << 32


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

"""A backup's rows as `(...)` tuples of SQL literals, built in this process from the server's plain values.

Why here and not on the server: asking the server for the literals (`QUOTE`, `HEX`, `CONCAT`
per column) cost mariadbd three to four times the CPU of sending the plain values and held
the backup to ~0.6x of `mariadb-dump | zstd` (README). Like mariadb-dump, the server now sends
each value as its own text (utf8mb4, `client.SESSION_SETUP`) and davit writes the literals.

The literals are those the server wrote before, byte for byte (so a backup after this change
deduplicates against the ones before it, and `restore`/`export sql` read both alike):
- NULL as NULL (never confused with '': the drivers give None for NULL);
- binary strings and BLOBs (no character set) and spatial values (the server's internal
  form) as a hex literal `0x...` (`X''` when empty), as `mariadb-dump --hex-blob` writes them;
- BIT as `b'...'` (its bits, no leading zeros);
- anything else (integers, DECIMAL's exact text, FLOAT/DOUBLE, dates, zero dates,
  DATETIME(6), TIME, YEAR, JSON, ENUM, SET, text in any collation) as `QUOTE` quotes it: in
  single quotes, a backslash before backslash and quote, NUL as `\\0`, Ctrl-Z as `\\Z`; the
  server converts the string back to the column's type on restore.

Escaping byte by byte is right because the text is UTF-8: no byte of a multi-byte character
is ASCII, so none is taken for a quote or a backslash.

Speed: most tables hold no binary or BIT column. Their rows are built a batch at a time with
a few calls over the whole batch: each row's values joined by a separator byte, the rows by
another, NULL as a third, all three bytes that never occur in UTF-8 (0xFF, 0xFE, 0xFD); the
batch escaped at once, the separators replaced by `','` and `'),('` and `'<NULL byte>'` by
NULL, then split into rows. Python touches each row once (one `join`), never each value. A
batch whose values hold one of those bytes after all (counted: there must be exactly as many
of them as separators were put in) is built value by value, with the same result.
"""

from __future__ import annotations

from binascii import hexlify
from collections.abc import Sequence

NULL = b"NULL"
BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
SPATIAL_TYPES = frozenset(
    {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}
)
TEXT, HEX, BIT = "text", "hex", "bit"

# What QUOTE escapes, backslash first (the later replacements add backslashes of their own).
_ESCAPES = ((b"\\", b"\\\\"), (b"'", b"\\'"), (b"\x00", b"\\0"), (b"\x1a", b"\\Z"))
_COL, _ROW, _NUL = b"\xff", b"\xfe", b"\xfd"  # never in UTF-8
_SEPARATORS = _COL + _ROW + _NUL


def kind(data_type: str, has_charset: bool) -> str:
    """How a column's values are written, from its `information_schema.COLUMNS` type."""
    if data_type == "bit":
        return BIT
    if not has_charset and (data_type in BINARY_TYPES or data_type in SPATIAL_TYPES):
        return HEX
    return TEXT


def escape(data: bytes) -> bytes:
    for special, escaped in _ESCAPES:
        if special in data:
            data = data.replace(special, escaped)
    return data


def quote(text: bytes) -> bytes:
    return b"'" + escape(text) + b"'"


def hex_literal(value: bytes) -> bytes:
    return b"0x" + hexlify(value) if value else b"X''"


def bit_literal(value: bytes) -> bytes:
    return b"b'" + format(int.from_bytes(value, "big"), "b").encode() + b"'"


def literal(kind: str, value: bytes | str | None) -> bytes:
    """One value's literal. `value`: the server's text as bytes (mysqlclient, no converters) or
    as str (PyMySQL decodes text), bytes for binary values, None for NULL."""
    if value is None:
        return NULL
    raw = value.encode() if isinstance(value, str) else value
    if kind == HEX:
        return hex_literal(raw)
    if kind == BIT:
        return bit_literal(raw)
    return quote(raw)


class Rows:
    """Builds a table's rows, a batch (the driver's rows, in order) at a time."""

    def __init__(self, kinds: Sequence[str], raw: bool) -> None:
        """`kinds`: per column (`kind`); `raw`: every value comes as bytes (mysqlclient)."""
        self.kinds = list(kinds)
        self.fast = raw and all(k == TEXT for k in self.kinds)

    def __call__(self, batch: Sequence[Sequence[bytes | str | None]]) -> list[bytes]:
        if self.fast and batch:
            built = self._text_batch(batch)  # type: ignore[arg-type]
            if built is not None:
                return built
        return [self.row(r) for r in batch]

    def row(self, row: Sequence[bytes | str | None]) -> bytes:
        return b"(" + b",".join(literal(k, v) for k, v in zip(self.kinds, row, strict=True)) + b")"

    def _text_batch(self, batch: Sequence[Sequence[bytes | None]]) -> list[bytes] | None:
        """Every value text: the batch's rows with a few calls over all of it, or None if a
        value holds one of the separator bytes (then `row` builds them one by one)."""
        joined, nulls = [], 0
        for r in batch:
            try:
                joined.append(_COL.join(r))  # type: ignore[arg-type]
            except TypeError:  # a NULL among them
                nulls += r.count(None)
                joined.append(_COL.join(_NUL if v is None else v for v in r))
        data = _ROW.join(joined)
        rows = len(batch)
        # exactly the separators put in, none from a value (one pass: cheaper than three counts)
        if len(data) - len(data.translate(None, _SEPARATORS)) != rows * len(self.kinds) - 1 + nulls:
            return None
        data = b"('" + escape(data).replace(_COL, b"','").replace(_ROW, b"')\xfe('") + b"')"
        if nulls:
            data = data.replace(b"'" + _NUL + b"'", NULL)
        return data.split(_ROW)

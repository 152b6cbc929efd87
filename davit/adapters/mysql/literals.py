"""A backup's rows as `(...)` tuples of SQL literals, built in this process from the server's raw values.

Why here and not on the server: asking the server for the literals (`QUOTE`, `HEX`, `CONCAT`
per column) cost mariadbd three to four times the CPU of sending the plain values, and held
the backup to ~0.6x of `mariadb-dump | zstd` (README, bench/sql.py). Like mariadb-dump, the
server now sends each value as its own text and the client escapes it.

Each value's literal is exact whatever its type, as the server's text of it:
- NULL as NULL (never confused with '': the drivers give None for NULL);
- integers (TINYINT...BIGINT, signed or not) as their digits, unquoted;
- bytes (binary strings and BLOBs: character set `binary`, told apart from `*_bin`
  collations by the field's character set number, 63; spatial values in the server's internal
  form) as a hex literal `0x...` (`X''` when empty), as `mariadb-dump --hex-blob` writes them;
- BIT as `b'...'` (its bits, no leading zeros);
- anything else (text in utf8mb4, DECIMAL's exact text, FLOAT/DOUBLE, dates, zero dates,
  DATETIME(6), TIME, YEAR, JSON, ENUM, SET) as a quoted string, escaped as libmariadb's
  `mysql_escape_string` does: backslash, both quotes, NUL, newline, carriage return, Ctrl-Z.
  The server converts the string back to the column's type, as it did with `QUOTE`.

Byte-wise escaping is right because every connection reads in utf8mb4 (`client.SESSION_SETUP`):
no byte of a multi-byte UTF-8 character is ASCII, so none can be taken for a quote or a
backslash (the charsets where that happens, sjis/gbk/big5, are never the results' charset).

Two builders give the very same bytes (tests/integration/mysql/test_mysql_driver.py,
tests/unit/test_mysql_literals.py): through mysqlclient, `C_CONVERTERS` makes its C code call
libmariadb's escaping per value while it reads the row (no Python per text value); through
PyMySQL, `py_row` does it in Python from the description's field types.
"""

from __future__ import annotations

from binascii import hexlify
from collections.abc import Callable, Sequence
from typing import Any

from pymysql.constants import FIELD_TYPE, FLAG

try:
    from MySQLdb import _mysql
except ImportError:  # mysqlclient not installed: PyMySQL reads the rows (cdriver.py)
    _mysql = None

NULL = b"NULL"
INTEGER_TYPES = frozenset({FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG, FIELD_TYPE.INT24})
# Field types the server uses for strings and BLOBs, text or binary alike (the character set tells).
STRING_TYPES = (
    FIELD_TYPE.STRING,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.LONG_BLOB,
    FIELD_TYPE.BLOB,
)

_ESCAPES = {0: b"\\0", 10: b"\\n", 13: b"\\r", 26: b"\\Z", 34: b'\\"', 39: b"\\'", 92: b"\\\\"}
_ESCAPE_TABLE = {k: v.decode() for k, v in _ESCAPES.items()}


def quote(text: str) -> bytes:
    """A quoted string literal, escaped as libmariadb's `mysql_escape_string` (utf8mb4)."""
    return b"'" + text.translate(_ESCAPE_TABLE).encode() + b"'"


def hex_literal(value: bytes) -> bytes:
    return b"0x" + hexlify(value) if value else b"X''"


def bit_literal(value: bytes) -> bytes:
    return b"b'" + format(int.from_bytes(value, "big"), "b").encode() + b"'"


def row_text(row: Sequence[bytes | None]) -> bytes:
    """A row of literals (None for NULL) as `(...)`."""
    if None in row:
        row = [NULL if v is None else v for v in row]
    return b"(" + b",".join(row) + b")"  # type: ignore[arg-type]


def _c_converters() -> dict[int, Any]:
    """mysqlclient's converters (field type -> callable, or a list of (flag mask, callable) it
    picks from by the field's flags, with BINARY meaning character set 63) giving literals."""
    if _mysql is None:
        return {}
    text = _mysql.string_literal  # C: escapes with mysql_escape_string, adds the quotes
    conv: dict[int, Any] = {t: text for t in range(256) if t not in INTEGER_TYPES}  # integers: raw bytes
    for t in STRING_TYPES:
        conv[t] = [(FLAG.BINARY, hex_literal), (None, text)]
    conv[FIELD_TYPE.GEOMETRY] = hex_literal
    conv[FIELD_TYPE.BIT] = bit_literal
    return conv


C_CONVERTERS = _c_converters()


def _py_literal(field_type: int) -> Callable[[Any], bytes]:
    if field_type == FIELD_TYPE.BIT:
        return bit_literal
    if field_type in INTEGER_TYPES:
        return str.encode

    def other(value: Any) -> bytes:  # PyMySQL gives bytes for character set binary, str otherwise
        return hex_literal(value) if isinstance(value, bytes) else quote(value)

    return other


def py_row(description: Sequence[Sequence[Any]]) -> Callable[[Sequence[Any]], bytes]:
    """For PyMySQL (decoders off): a function turning a row of the result `description` names into `(...)`."""
    makers = [_py_literal(int(d[1])) for d in description]

    def make(row: Sequence[Any]) -> bytes:
        return b"(" + b",".join(NULL if v is None else f(v) for f, v in zip(makers, row, strict=True)) + b")"

    return make

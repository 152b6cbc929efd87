"""An INSERT larger than the target server accepts in one packet, sent as statements under it.

The server refuses a statement longer than its `max_allowed_packet` (error 1153, or it hangs
up while the packet arrives), and that variable is read-only for a session. A value's literal
takes up to twice its size (hex for binary values, escapes in text), so a row the source server
holds can be an INSERT no server set alike accepts whole. Such a statement is sent as:

- INSERTs of fewer rows each (a snapshot's chunk holds whole rows: any cut between two rows is
  an INSERT of its own, counted rows unchanged);
- a row still too large alone: its largest values built first in user variables (`SET
  @davit_v0 = CONCAT(...)`, each a piece of the value's literal, the literal cut between
  characters and never inside an escape), then one INSERT naming the variables where the
  literals were. The server converts a variable to the column's type as it would the literal.

Everything runs on the table's load connection, inside its load transaction (a SET is no part
of a transaction, and needs none: the INSERT is). The server caps a string it builds at the
same `max_allowed_packet` (CONCAT gives NULL beyond it), so a single value larger than that
cannot be restored into that server in any way: refused naming the table and the column's
position, before anything of the row is sent, or when the server gave NULL after all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from davit.domain.errors import PermanentError

# Room for the statement around a piece: `SET @davit_v12 = CONCAT(@davit_v12, _binary'...')` and
# the packet's command byte.
OVERHEAD = 256
VARIABLE = "@davit_v{}"
CHECK_HEAD = b"SELECT @davit_v"  # (VARIABLE's start: every check names one)
_QUOTED = rb"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"
_TOKENS = re.compile(_QUOTED + rb"|`(?:[^`]|``)*`|[(),;]", re.S)
_VALUES = re.compile(rb"\bVALUES?\b", re.I)
_HEX = re.compile(rb"0x([0-9a-fA-F]+)|[xX]'([0-9a-fA-F]*)'", re.S)
_STRING = re.compile(rb"(_[A-Za-z0-9]+\s*|[nN])?'(.*)'", re.S)
_ESCAPE = re.compile(rb"\\.|''", re.S)


class ValueTooLarge(PermanentError):
    """A single value the target server cannot hold in one string (its max_allowed_packet)."""


@dataclass
class Parsed:
    head: bytes  # `INSERT INTO t (cols) VALUES`
    rows: list[list[bytes]]  # each row's values, as their literals


def parse(statement: bytes) -> Parsed | None:
    """The head and the rows' value literals of `INSERT ... VALUES (...),(...)`, or None when the
    statement is not that shape (then it is sent as it is, and the server judges it)."""
    head_end = _head_end(statement)
    if head_end is None:
        return None
    rows = _rows(statement, head_end)
    return Parsed(statement[:head_end], rows) if rows else None


def _head_end(statement: bytes) -> int | None:
    """Where the VALUES keyword ends, looked for between tokens (backquoted names skipped)."""
    last = 0
    for m in _TOKENS.finditer(statement):
        found = _VALUES.search(statement, last, m.start())
        if found:
            return found.end()
        last = m.end()
    found = _VALUES.search(statement, last)
    return found.end() if found else None


def _rows(statement: bytes, start: int) -> list[list[bytes]] | None:
    """Each top-level `(...)`'s values split at its top-level commas; None if anything but
    whitespace lies between the rows and their commas, or after the last row and its `;`."""
    rows: list[list[bytes]] = []
    row: list[bytes] = []
    depth, begin, outside = 0, start, start  # outside: where the text between rows began
    for m in _TOKENS.finditer(statement, start):
        token = m.group(0)
        if depth == 0:
            if token not in (b"(", b",", b";") or statement[outside : m.start()].strip():
                return None
            outside = m.end()
        if token == b"(":
            depth += 1
            if depth == 1:
                begin, row = m.end(), []
        elif token == b")":
            depth -= 1
            if depth == 0:
                row.append(statement[begin : m.start()].strip())
                rows.append(row)
                outside = m.end()
        elif token == b"," and depth == 1:
            row.append(statement[begin : m.start()].strip())
            begin = m.end()
        elif token == b";":
            if depth:
                return None
            break
    if depth or statement[outside:].strip():
        return None
    return rows


def decoded_size(literal: bytes) -> int:
    """About the bytes the server builds from `literal`: exact for hex, an upper bound for a
    quoted string (each escape counted as one byte), the literal's length otherwise."""
    hexed = _HEX.fullmatch(literal)
    if hexed:
        return len(hexed.group(1) or hexed.group(2) or b"") // 2
    quoted = _STRING.fullmatch(literal)
    if quoted:
        content = quoted.group(2)
        return len(content) - len(_ESCAPE.findall(content))
    return len(literal)


def largest_value(statement: bytes) -> int:
    """The size of the largest value of an INSERT (`decoded_size`), 0 if it does not parse."""
    parsed = parse(statement)
    if parsed is None:
        return 0
    return max((decoded_size(v) for row in parsed.rows for v in row), default=0)


RESTORE_AGAIN = "on that server and run the restore again"


def split(statement: bytes, packet: int, table: str, remedy: str = RESTORE_AGAIN) -> Iterator[bytes]:
    """`statement` as statements each of at most `packet - 1` bytes (the packet's command byte
    aside): the same rows, in the same order. A statement that does not parse as an INSERT of
    literal rows is given back as it is. `remedy` ends the error of a value over `packet`
    (what to do after setting max_allowed_packet: the restore and the export differ)."""
    budget = packet - OVERHEAD
    if len(statement) < packet:
        yield statement
        return
    parsed = parse(statement)
    if parsed is None:
        yield statement
        return
    head = parsed.head + b"\n"
    batch: list[bytes] = []
    size = len(head) + 2
    for values in parsed.rows:
        row = b"(" + b",".join(values) + b")"
        if batch and size + len(row) + 2 > budget:
            yield head + b",\n".join(batch) + b";\n"
            batch, size = [], len(head) + 2
        if len(head) + len(row) + 2 <= budget:
            batch.append(row)
            size += len(row) + 2
            continue
        yield from _one_row(head, values, packet, budget, table, remedy)
    if batch:
        yield head + b",\n".join(batch) + b";\n"


def _one_row(head: bytes, values: list[bytes], packet: int, budget: int, table: str, remedy: str) -> Iterator[bytes]:
    """A row too large for one statement: its largest values into variables, then the INSERT."""
    values = list(values)
    row_size = len(head) + sum(len(v) + 1 for v in values) + 4
    named: list[tuple[int, bytes]] = []
    for index in sorted(range(len(values)), key=lambda i: len(values[i]), reverse=True):
        if row_size <= budget:
            break
        literal = values[index]
        if decoded_size(literal) > packet:
            raise ValueTooLarge(
                f"{table}: a row of the snapshot holds a value (column {index + 1}) of about {decoded_size(literal)} bytes, "
                f"more than the target server's max_allowed_packet ({packet}), the largest string it builds: set "
                f"max_allowed_packet to at least {-(-(decoded_size(literal) + 1) // 1024) * 1024} {remedy}"
            )
        variable = VARIABLE.format(len(named)).encode()
        named.append((index, variable))
        yield from _build(variable, literal, budget, table, index)
        row_size -= len(literal) - len(variable)
        values[index] = variable
    if row_size > budget:
        raise ValueTooLarge(f"{table}: a row of the snapshot cannot be sent in statements under max_allowed_packet ({packet})")
    yield head + b"(" + b",".join(values) + b");\n"
    # the variables' memory back (a row may hold hundreds of MB); also the check that none of
    # them was cut to NULL by the server (see `check_built`)
    yield b"SET " + b", ".join(v + b" = NULL" for _, v in named)


def _build(variable: bytes, literal: bytes, budget: int, table: str, index: int) -> Iterator[bytes]:
    """SET statements building `variable` from `literal` in pieces, each statement within budget."""
    room = budget - 2 * len(variable) - 32
    hexed = _HEX.fullmatch(literal)
    first = True
    if hexed:
        digits = hexed.group(1) or hexed.group(2) or b""
        step = room - room % 2
        for at in range(0, max(len(digits), 1), step):
            yield _set(variable, b"X'" + digits[at : at + step] + b"'", first)
            first = False
        yield _check(variable)
        return
    quoted = _STRING.fullmatch(literal)
    if not quoted:
        raise ValueTooLarge(
            f"{table}: a row of the snapshot holds a value (column {index + 1}) too large to send that is no string"
        )
    prefix, content = quoted.group(1) or b"", quoted.group(2)
    room -= len(prefix) + 2
    at = 0
    while True:
        end = _cut(content, at, at + room)
        yield _set(variable, prefix + b"'" + content[at:end] + b"'", first)
        first = False
        at = end
        if at >= len(content):
            break
    yield _check(variable)


def _set(variable: bytes, piece: bytes, first: bool) -> bytes:
    # CONCAT even for the first piece: its result is always a string (a bare hex literal
    # assigned to a variable could be taken for a number)
    return b"SET " + variable + b" = CONCAT(" + (b"" if first else variable + b", ") + piece + b")"


def _check(variable: bytes) -> bytes:
    """A query whose one value is 1 when the server gave NULL: the string outgrew its limit."""
    return b"SELECT " + variable + b" IS NULL AS davit_too_large"


def is_check(statement: bytes) -> bool:
    """Is this one of `split`'s checks, whose result says whether the variable was cut to NULL?"""
    return statement.startswith(CHECK_HEAD)


def checked_variable(statement: bytes) -> bytes:
    """The variable a check (`is_check`) looks at: `@davit_v0`."""
    return statement[len(b"SELECT ") : statement.index(b" IS NULL")]


def too_large(table: str, packet: int) -> ValueTooLarge:
    """The error when a check found a variable cut to NULL by the server."""
    return ValueTooLarge(
        f"{table}: a row of the snapshot holds a value larger than the target server's max_allowed_packet ({packet}), "
        "the largest string it builds: set max_allowed_packet higher on that server and run the restore again"
    )


def _cut(content: bytes, start: int, want: int) -> int:
    """Where to end a piece of a quoted string's content begun at `start` (a boundary), at most
    `want`: not inside a multi-byte UTF-8 character (up to three continuation bytes back; raw
    binary in quotes has no characters to keep whole) and not inside an escape pair (`\\x`,
    `''`; read from `start`, a boundary, so each piece's scan covers only itself)."""
    if want >= len(content):
        return len(content)
    end = want
    for back in range(4):
        if not 0x80 <= content[want - back] < 0xC0:
            end = want - back
            break
    for m in _ESCAPE.finditer(content, start, end + 1):
        if m.start() < end < m.end():  # pairs never overlap: at most one spans the cut
            end = m.start()
            break
    return end if end > start else want

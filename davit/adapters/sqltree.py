"""Reading a SQL snapshot's tree (PostgreSQL and MariaDB kinds) as input that may be hostile.

Whoever can write a plain repository can publish a tree of their choosing, and a restore turns
its names and statements into SQL run with the target's admin rights. Before anything is
written to a target, every line is checked here: its length (`LINE_LIMIT`), its JSON nesting
(`DEPTH_LIMIT`), each field's type, chunk ids (64 hex digits), counts (non-negative
integers), and the names a restore quotes into SQL or a path (no NUL or other control
character, not empty, not `.` or `..`, within the servers' identifier length, and for database
names no `/`). A bad line fails the run naming the snapshot's line, the field and the reason,
as a `TreeRefused` (permanent: retrying reads the same tree).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import zstandard

from davit.adapters.zstdlimit import TooLarge, decompress_bounded
from davit.domain.errors import PermanentError

TREE_LIMIT = 1 << 30  # a tree decompressed: what older readers allowed
LINE_LIMIT = 64 << 20  # one line: a database's objects (routines' bodies) or a schema's JSON
DEPTH_LIMIT = 16  # the deepest a writer nests: line > pg > sequences > [schema, name, value]
NAME_LIMIT = 128  # bytes: above PostgreSQL's 63 and MariaDB's 64 characters (of up to 2 bytes)
_HEX = frozenset("0123456789abcdef")


class TreeRefused(PermanentError):
    """A snapshot's tree line that a restore must not act on."""


def lines(data: bytes, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every line of a zstd tree, each checked for size and depth."""
    try:
        plain = decompress_bounded(data, TREE_LIMIT)  # (not `decompress`: it believes the frame's size)
    except (zstandard.ZstdError, TooLarge) as exc:
        raise TreeRefused(f"{what}: the tree does not decompress within {TREE_LIMIT >> 20} MiB: {exc}") from exc
    for n, line in enumerate(plain.split(b"\n"), 1):
        if not line.strip():
            continue
        if len(line) > LINE_LIMIT:
            raise TreeRefused(f"{what}: tree line {n} is {len(line):,} bytes, above the {LINE_LIMIT >> 20} MiB a line may hold")
        try:
            value = json.loads(line)
        except RecursionError as exc:
            raise TreeRefused(f"{what}: tree line {n} nests deeper than {DEPTH_LIMIT} levels") from exc
        except ValueError as exc:
            raise TreeRefused(f"{what}: tree line {n} is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise TreeRefused(f"{what}: tree line {n} is not a JSON object")
        if _depth(value) > DEPTH_LIMIT:
            raise TreeRefused(f"{what}: tree line {n} nests deeper than {DEPTH_LIMIT} levels")
        yield n, value


def _depth(value: Any) -> int:
    """How deep lists and objects nest in `value` (iteratively: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > DEPTH_LIMIT:
                return level
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


class Line:
    """Typed access to one tree line's fields; a missing or ill-typed field is refused by name."""

    def __init__(self, what: str, number: int, value: dict[str, Any]) -> None:
        self.what, self.number, self.value = what, number, value

    def refuse(self, field: str, reason: str) -> TreeRefused:
        return TreeRefused(f"{self.what}: tree line {self.number}: field {field!r} {reason}")

    def get(self, field: str, kind: type | tuple[type, ...], source: dict[str, Any] | None = None) -> Any:
        container = self.value if source is None else source
        if field not in container:
            raise self.refuse(field, "is missing")
        found = container[field]
        if not isinstance(found, kind) or (isinstance(found, bool) and kind in (int, (int,))):
            raise self.refuse(field, f"is a {type(found).__name__}, not a {getattr(kind, '__name__', kind)}")
        return found

    def text(self, field: str, source: dict[str, Any] | None = None, optional: bool = False) -> Any:
        container = self.value if source is None else source
        if optional and container.get(field) is None:
            return None
        return self.get(field, str, source)

    def count(self, field: str, source: dict[str, Any] | None = None) -> int:
        found = int(self.get(field, int, source))
        if found < 0:
            raise self.refuse(field, f"is negative ({found})")
        return found

    def texts(self, field: str, source: dict[str, Any] | None = None) -> list[str]:
        found = self.get(field, list, source)
        if not all(isinstance(v, str) for v in found):
            raise self.refuse(field, "holds something other than text")
        return list(found)

    def chunks(self) -> list[str]:
        found = self.texts("c")
        for cid in found:
            if len(cid) != 64 or not set(cid) <= _HEX:
                raise self.refuse("c", f"holds {cid[:80]!r}, not a chunk id (64 hex digits)")
        return found

    def name(self, field: str, source: dict[str, Any] | None = None, database: bool = False) -> str:
        """A database, schema or table name that a restore quotes into SQL (and a server may
        map to a directory): refused when empty, `.`/`..`, too long, or holding a control
        character (NUL included); a database name may not hold `/` either."""
        found = str(self.get(field, str, source))
        problem = name_problem(found, database)
        if problem:
            raise self.refuse(field, f"is {found[:80]!r}: {problem}")
        return found


def name_problem(name: str, database: bool = False) -> str | None:
    """Why `name` cannot be a database (or schema/table) name a restore acts on, or None."""
    if not name or name in (".", ".."):
        return "not a name"
    if len(name.encode()) > NAME_LIMIT:
        return f"longer than {NAME_LIMIT} bytes"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    if database and "/" in name:
        return "holds '/'"
    return None

"""Values between documents and text lines: dotted paths, CSV cells, and mongoimport's typed columns.

A CSV cell is written the way `mongo.export` documents it (a string as is, a missing field
empty, anything else relaxed Extended JSON) and read back as a string, or, with typed
columns, converted by the column's `NAME.TYPE(ARG)` (see `davit/domain/jobs/mongo.py` for the list).
A missing field and null are both an empty cell, as in mongoexport. A conversion that fails
raises `ValueError` with the reason; the importer adds file and line.
`date(LAYOUT)` takes Go's reference-time layout, as mongoimport does, translated token by
token into a `strptime` format.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Callable
from decimal import InvalidOperation
from typing import Any

from bson import Binary, Decimal128, Int64, json_util

from davit.domain.jobs.mongo import typed_column

MISSING = object()
RELAXED = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=datetime.UTC)
TRUE = {"true", "t", "1", "yes", "y"}
FALSE = {"false", "f", "0", "no", "n"}
INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)


def get_path(doc: Any, path: str) -> Any:
    """The value at a dotted path, or MISSING."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return MISSING
        doc = doc[part]
    return doc


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{path}: {part} is both a value and a document")
        node = child
    node[parts[-1]] = value


def drop_path(doc: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def csv_cell(value: Any, options: json_util.JSONOptions) -> str:
    if value is MISSING or value is None:  # as mongoexport writes them
        return ""
    if isinstance(value, str):
        return value
    return json_util.dumps(value, json_options=options)


# --- typed columns ---------------------------------------------------------------------------

_GO_TOKENS = [  # longest first, so "2006" wins over "06" and "January" over "Jan"
    ("January", "%B"),
    ("Monday", "%A"),
    ("Z07:00", "%z"),
    ("-07:00", "%z"),
    ("-0700", "%z"),
    ("2006", "%Y"),
    ("Jan", "%b"),
    ("Mon", "%a"),
    ("MST", "%Z"),
    ("PM", "%p"),
    ("01", "%m"),
    ("02", "%d"),
    ("03", "%I"),
    ("04", "%M"),
    ("05", "%S"),
    ("06", "%y"),
    ("15", "%H"),
]
_GO = re.compile(r"[.,]0+(?!\d)|[.,]9+(?!\d)|" + "|".join(re.escape(t) for t, _ in _GO_TOKENS))


def go_layout_to_strptime(layout: str) -> str:
    """Go's `2006-01-02T15:04:05.000Z07:00` -> `%Y-%m-%dT%H:%M:%S.%f%z` (what mongoimport's date() reads)."""
    out, pos = [], 0
    table = dict(_GO_TOKENS)
    for found in _GO.finditer(layout):
        out.append(layout[pos : found.start()].replace("%", "%%"))
        token = found.group()
        out.append(token[0] + "%f" if token[0] in ".," else table[token])
        pos = found.end()
    out.append(layout[pos:].replace("%", "%%"))
    return "".join(out)


def _int(bounds: tuple[int, int], make: Callable[[int], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if not bounds[0] <= value <= bounds[1]:
            raise ValueError(f"{text!r} is out of range for {name}")
        return make(value)

    return convert


def _double(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _decimal(text: str) -> Decimal128:
    try:
        return Decimal128(text.strip())
    except (InvalidOperation, ValueError, TypeError):
        raise ValueError(f"{text!r} is not a decimal") from None


def _boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false, 1/0, yes/no)")


def _date(layout: str) -> Callable[[str], datetime.datetime]:
    fmt = go_layout_to_strptime(layout) if layout else ""

    def convert(text: str) -> datetime.datetime:
        try:
            value = (
                datetime.datetime.strptime(text, fmt)
                if fmt
                else datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            )
        except ValueError:
            raise ValueError(f"{text!r} does not match the date layout {layout or 'RFC 3339'!r}") from None
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)

    return convert


def _binary(encoding: str) -> Callable[[str], Binary]:
    decode = {"base64": base64.b64decode, "hex": bytes.fromhex, "base32": base64.b32decode}[encoding]

    def convert(text: str) -> Binary:
        try:
            return Binary(decode(text.strip()))
        except (binascii.Error, ValueError):
            raise ValueError(f"{text!r} is not {encoding}") from None

    return convert


def _auto(text: str) -> Any:
    try:
        json.loads(text)
    except ValueError:
        return text
    return json_util.loads(text, json_options=RELAXED)


def converter(kind: str, arg: str) -> Callable[[str], Any]:
    simple: dict[str, Callable[[str], Any]] = {
        "auto": _auto,
        "string": str,
        "int32": _int(INT32, int, "int32"),
        "int64": _int(INT64, Int64, "int64"),
        "double": _double,
        "decimal": _decimal,
        "boolean": _boolean,
    }
    if kind in ("date", "date_go"):
        return _date(arg)
    if kind == "binary":
        return _binary(arg)
    return simple[kind]


class Columns:
    """The columns of a CSV input: names and, if typed, how each value is converted."""

    def __init__(self, names: list[str], typed: bool, ignore_blanks: bool) -> None:
        self.names: list[str] = []
        self.convert: list[Callable[[str], Any]] = []
        self.ignore_blanks = ignore_blanks
        for text in names:
            if typed:
                name, kind, arg = typed_column(text)
                self.names.append(name)
                self.convert.append(converter(kind, arg))
            else:
                self.names.append(text)
                self.convert.append(str)

    def document(self, row: list[str]) -> dict[str, Any]:
        """The row as a document; `ValueError` naming the column if a value does not convert."""
        if len(row) != len(self.names):
            raise ValueError(f"{len(row)} values for {len(self.names)} columns")
        doc: dict[str, Any] = {}
        for name, convert, text in zip(self.names, self.convert, row, strict=True):
            if text == "" and self.ignore_blanks:
                continue
            try:
                value = convert(text)
            except ValueError as exc:
                raise ValueError(f"column {name}: {exc}") from None
            set_path(doc, name, value)
        return doc

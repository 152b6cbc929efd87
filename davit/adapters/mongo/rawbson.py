"""Raw BSON without decoding: cutting a byte stream into documents and documents into chunks,
and the little that must be decoded: a chunk's last `_id`, kept as canonical Extended JSON.

A chunk is whole documents concatenated, at most `limit` bytes unless one document alone is
larger; the same bytes are a valid piece of a mongodump `.bson` file, so export is a copy.
Resuming "after the last `_id`" must respect MongoDB's type bracketing: `$gt` only compares
within one BSON type class, so `after_id_filter` adds every type class that sorts later.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import IO, Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

CODEC: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO, tz_aware=True)
RAW_CODEC: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.CANONICAL, datetime_conversion=DatetimeConversion.DATETIME_AUTO, tz_aware=True
)
MAX_DOC = 48 << 20  # a length beyond this is corrupt input, not a document (the server cap is 16 MiB)

# BSON type classes in MongoDB's sort order (the ones an _id can hold), as $type codes (numbers,
# which every server accepts; FerretDB refuses some of the names).
_BRACKETS: list[tuple[int, ...]] = [
    (-1,),
    (10,),
    (16, 18, 1, 19),
    (2, 14),
    (3,),
    (5,),
    (7,),
    (8,),
    (9,),
    (17,),
    (11,),
    (127,),
]
EXOTIC = {19, 14, -1, 127}
_CODES = {
    "minKey": -1,
    "null": 10,
    "int": 16,
    "long": 18,
    "double": 1,
    "decimal": 19,
    "string": 2,
    "object": 3,
    "binData": 5,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "timestamp": 17,
    "regex": 11,
    "maxKey": 127,
}


class BadBson(ValueError):
    """The bytes are not a sequence of BSON documents (truncated or corrupt)."""


def split_docs(data: bytes | memoryview) -> Iterator[memoryview]:
    """The documents of a buffer of concatenated BSON, as views (no copy, no decode)."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < 5:
            raise BadBson(f"{end - pos} stray bytes at offset {pos}")
        size = int.from_bytes(view[pos : pos + 4], "little")
        if size < 5 or pos + size > end or view[pos + size - 1] != 0:
            raise BadBson(f"bad document length {size} at offset {pos}")
        yield view[pos : pos + size]
        pos += size


def read_docs(stream: IO[bytes]) -> Iterator[bytes]:
    """The documents of a file of concatenated BSON (a mongodump `.bson`), one at a time."""
    offset = 0
    while True:
        head = stream.read(4)
        if not head:
            return
        if len(head) < 4:
            raise BadBson(f"truncated document header at offset {offset}")
        size = int.from_bytes(head, "little")
        if size < 5 or size > MAX_DOC:
            raise BadBson(f"bad document length {size} at offset {offset}")
        rest = stream.read(size - 4)
        if len(rest) != size - 4 or rest[-1] != 0:
            raise BadBson(f"truncated document at offset {offset}")
        offset += size
        yield head + rest


def chunks_of(docs: Iterator[bytes | memoryview], limit: int) -> Generator[tuple[bytes, int, bytes], None, None]:
    """Group documents into chunks of at most `limit` bytes: (chunk, documents, last document)."""
    parts: list[bytes | memoryview] = []
    size = count = 0
    for doc in docs:
        if parts and size + len(doc) > limit:
            yield b"".join(parts), count, bytes(parts[-1])
            parts, size, count = [], 0, 0
        parts.append(doc)
        size += len(doc)
        count += 1
    if parts:
        yield b"".join(parts), count, bytes(parts[-1])


def doc_id(doc: bytes | memoryview) -> Any:
    """The `_id` of one raw document (the only value davit ever decodes)."""
    return bson.decode(bytes(doc), CODEC).get("_id")


def id_to_json(value: Any) -> str:
    return json_util.dumps(value, json_options=JSON)


def id_from_json(text: str) -> Any:
    return json_util.loads(text, json_options=JSON)


def after_id_filter(last: Any, exotic: bool = True) -> dict[str, Any]:
    """Documents whose `_id` sorts after `last`, whatever the BSON types of the `_id`s.

    `exotic = False` leaves out the types some servers neither store nor accept in `$type`
    (FerretDB: decimal128, symbol, minKey, maxKey)."""
    return after_value_filter("_id", last, exotic)


def after_value_filter(field: str, last: Any, exotic: bool = True, descending: bool = False) -> dict[str, Any]:
    """Documents whose `field` sorts after `last` in an ascending (or descending) sort.

    Within `last`'s type class a comparison does it; the type classes that sort later (earlier
    when descending) are matched by `$type`, except null, matched by `{field: null}` so that a
    missing field, which sorts as null, is found too."""
    index = _bracket_index(_type_alias(last))
    others = _BRACKETS[:index] if descending else _BRACKETS[index + 1 :]
    codes = [a for bracket in others for a in bracket if a != 10 and (exotic or a not in EXOTIC)]
    terms: list[dict[str, Any]] = [] if last is None else [{field: {"$lt" if descending else "$gt": last}}]
    if codes:
        terms.append({field: {"$type": codes}})
    if (10,) in others:
        terms.append({field: None})
    if not terms:
        return {field: {"$in": []}}  # nothing sorts after it
    return terms[0] if len(terms) == 1 else {"$or": terms}


def after_sort_key_filter(sort: list[tuple[str, int]], last: list[Any], exotic: bool = True) -> dict[str, Any]:
    """Documents after the one whose sort key was `last`, in the total order `sort` gives (its
    last key unique, e.g. `_id`): equal on the first i keys and after on key i, for some i."""
    terms = []
    for i, (field, direction) in enumerate(sort):
        equal = [{f: v} for (f, _), v in zip(sort[:i], last[:i], strict=True)]
        after = after_value_filter(field, last[i], exotic, direction < 0)
        terms.append({"$and": [*equal, after]} if equal else after)
    return terms[0] if len(terms) == 1 else {"$or": terms}


def _bracket_index(alias: str) -> int:
    for i, bracket in enumerate(_BRACKETS):
        if _CODES[alias] in bracket:
            return i
    raise ValueError(f"an _id of BSON type {alias} cannot be resumed after")


def _type_alias(value: Any) -> str:
    import datetime

    from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
    from bson.datetime_ms import DatetimeMS

    checks: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "bool"),
        (Int64, "long"),
        (int, "int"),
        (float, "double"),
        (Decimal128, "decimal"),
        (str, "string"),
        (ObjectId, "objectId"),
        ((datetime.datetime, DatetimeMS), "date"),
        (Timestamp, "timestamp"),
        (Regex, "regex"),
        ((bytes, Binary), "binData"),
        (MinKey, "minKey"),
        (MaxKey, "maxKey"),
        (dict, "object"),
    ]
    if value is None:
        return "null"
    for kind, alias in checks:
        if isinstance(value, kind):
            return alias
    raise ValueError(f"an _id of Python type {type(value).__name__} cannot be resumed after")

"""Weaviate objects <-> Parquet chunks (zstd inside, one chunk = one Parquet file).

A chunk holds one batch of objects of one collection (and tenant). Columns:
    uuid         string
    properties   string: the properties as tagged JSON (below), so any schema fits one layout
    refs         string (nullable): {property: [[target collection, uuid], ...]}
    v:<name>     list<float32>: one column per vector name (the default vector is `default`)
    mv:<name>    list<list<float32>>: one column per multi-vector name

Properties keep their Python types through tagged JSON: a dict with one key starting with
`$` (property names never do) stands for a value JSON cannot carry: `$d` date (RFC 3339 as
the server sent it, nanoseconds included), `$u` uuid, `$g` geo coordinates [lat, lon], `$p`
phone number [input, default country], `$b` bytes (base64). Decoding gives back what the
client's batch import accepts, so a restored object reads back equal to the original; a date
comes back as its RFC 3339 text, which is how the client sends a datetime too, so the server
keeps every digit it had.
"""

from __future__ import annotations

import base64
import io
import json
import uuid as uuid_lib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, SupportsIndex, cast, overload

import pyarrow as pa
import pyarrow.parquet as pq

VEC, MVEC = "v:", "mv:"
F32 = pa.float32()


@dataclass
class Row:
    """One object as stored: what the backup read and the restore sends."""

    uuid: str
    properties: dict[str, Any]
    vectors: dict[str, bytes | Sequence[float]] = field(default_factory=dict)  # packed float32 when read
    multi_vectors: dict[str, list[list[float]]] = field(default_factory=dict)
    refs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    props_json: str | None = None  # the properties already dumped (the backup dumps them once)


# --- properties -------------------------------------------------------------------------------


def _tag(value: Any) -> Any:
    """The tagged form of a value JSON cannot carry (called by `json.dumps` for those only)."""
    if isinstance(value, datetime):
        return {"$d": getattr(value, "text", None) or value.isoformat()}
    if isinstance(value, uuid_lib.UUID):
        return {"$u": str(value)}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    if hasattr(value, "latitude") and hasattr(value, "longitude"):
        return {"$g": [value.latitude, value.longitude]}
    if hasattr(value, "number") and hasattr(value, "default_country"):
        return {"$p": [value.number, value.default_country]}
    raise TypeError(f"cannot store a property value of type {type(value).__name__}")


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key.startswith("$"):
            return _untag_one(key, inner)
    return {k: _untag(v) for k, v in value.items()}


def _untag_one(key: str, inner: Any) -> Any:
    from weaviate.classes.data import GeoCoordinate, PhoneNumber

    if key == "$d":
        return inner  # RFC 3339 text, as the server sent it: the client sends dates as text anyway
    if key == "$u":
        return uuid_lib.UUID(inner)
    if key == "$g":
        return GeoCoordinate(latitude=inner[0], longitude=inner[1])
    if key == "$p":
        return PhoneNumber(number=inner[0], default_country=inner[1] or None)
    if key == "$b":
        return base64.b64decode(inner)
    raise ValueError(f"unknown tag {key!r} in stored properties")


def dump_properties(props: dict[str, Any]) -> str:
    return json.dumps(props, separators=(",", ":"), ensure_ascii=False, default=_tag)


def load_properties(text: str) -> dict[str, Any]:
    loaded = _untag(json.loads(text))
    assert isinstance(loaded, dict)
    return loaded


# --- chunks -----------------------------------------------------------------------------------


def encode_rows(rows: list[Row]) -> bytes:
    """One Parquet file (zstd) holding `rows`."""
    use_system_memory_pool()
    columns: dict[str, pa.Array] = {
        "uuid": pa.array([r.uuid for r in rows], pa.string()),
        "properties": pa.array([r.props_json or dump_properties(r.properties) for r in rows], pa.string()),
        "refs": pa.array([json.dumps(r.refs, separators=(",", ":")) if r.refs else None for r in rows], pa.string()),
    }
    for name in sorted({n for r in rows for n in r.vectors}):
        columns[VEC + name] = _vector_column([r.vectors.get(name) for r in rows])
    for name in sorted({n for r in rows for n in r.multi_vectors}):
        columns[MVEC + name] = pa.array([r.multi_vectors.get(name) for r in rows], pa.list_(pa.list_(F32)))
    table = pa.table(columns)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=False, write_statistics=False)
    return sink.getvalue()


def _vector_column(vectors: list[bytes | Sequence[float] | None]) -> pa.Array:
    """list<float32> built from the vectors' float32 bytes (no Python float per value)."""
    offsets = [0]
    parts: list[bytes] = []
    for vec in vectors:
        if vec is not None:
            parts.append(vec if isinstance(vec, bytes) else array("f", vec).tobytes())
        offsets.append(offsets[-1] + ((len(vec) // 4 if isinstance(vec, bytes) else len(vec)) if vec is not None else 0))
    values = pa.Array.from_buffers(F32, offsets[-1], [None, pa.py_buffer(b"".join(parts))])
    mask = pa.array([v is None for v in vectors]) if any(v is None for v in vectors) else None
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask)


def decode_rows(data: bytes) -> list[Row]:
    """The rows of one chunk, in stored order."""
    return [row for batch in decode_batches(data, 1 << 30) for row in batch]


def decode_batches(data: bytes, size: int) -> Iterator[list[Row]]:
    """The rows of one chunk in stored order, `size` at a time: only those are Python objects.

    Read with the file reader batch by batch rather than `read_table`, whose dataset machinery
    alone added 10-15 MB to the restore's resident memory (measured on the benchmark's chunks)."""
    use_system_memory_pool()
    reader = pq.ParquetFile(io.BytesIO(data), pre_buffer=False)
    for batch in reader.iter_batches(batch_size=size, use_threads=False):
        yield _rows_of(batch)


def use_system_memory_pool() -> None:
    """Arrow's buffers from malloc instead of its default mimalloc pool, which keeps freed
    pages resident: restoring 20 chunks of 1,000 384-dim objects held about 12 MB more with
    it. The pool is process-wide; the Weaviate adapter is davitd's only Arrow user."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def _rows_of(batch: pa.RecordBatch) -> list[Row]:
    names = batch.schema.names
    uuids = batch.column("uuid").to_pylist()
    props = batch.column("properties").to_pylist()
    refs = batch.column("refs").to_pylist() if "refs" in names else [None] * len(uuids)
    vec_cols = {n[len(VEC) :]: _vectors_of(batch.column(n)) for n in names if n.startswith(VEC)}
    mvec_cols = {n[len(MVEC) :]: batch.column(n).to_pylist() for n in names if n.startswith(MVEC)}
    rows = []
    for i, uid in enumerate(uuids):
        rows.append(
            Row(
                uuid=uid,
                properties=load_properties(props[i]),
                vectors={n: v for n, col in vec_cols.items() if (v := col[i]) is not None},
                multi_vectors={n: col[i] for n, col in mvec_cols.items() if col[i] is not None},
                refs=_refs(refs[i]),
            )
        )
    return rows


class PackedVector(list[float]):
    """A vector kept as its float32 values: until the client packs it for the wire (restore),
    or from the wire to the chunk (backup, see `decoding`).

    The client accepts a vector only if it is a list (or numpy and the like) and packs it by
    iterating it; so this is a list in type only, whose length, items and iteration come from
    the float32 view it holds. The Python floats of one vector then exist only while it is
    packed, instead of all of a batch's in flight (about 12 KB a 384-dim vector as floats,
    1.5 KB as float32). The list storage itself stays empty, so code that reads lists at the
    C level (pyarrow, json) sees an empty list: give such code `tobytes()` or `tolist()`."""

    __slots__ = ("_values",)

    def __init__(self, values: memoryview[float]) -> None:
        super().__init__()
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return len(self._values) > 0

    def __iter__(self) -> Iterator[float]:
        return iter(self._values)

    @overload
    def __getitem__(self, index: SupportsIndex) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: SupportsIndex | slice) -> float | list[float]:
        if isinstance(index, slice):
            return cast(list[float], self._values[index].tolist())
        return float(self._values[index])

    def tolist(self) -> list[float]:
        return cast(list[float], self._values.tolist())

    def tobytes(self) -> bytes:
        return self._values.tobytes()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self.tolist() == list(other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"PackedVector({len(self)} float32)"


def _vectors_of(column: pa.Array) -> list[PackedVector | None]:
    """Each row's vector as a view of the column's float32 buffer (no copy)."""
    flat = column.flatten()
    buffer = flat.buffers()[1]
    values = (
        memoryview(buffer).cast("B")[flat.offset * 4 : (flat.offset + len(flat)) * 4].cast("f")
        if buffer is not None
        else memoryview(b"").cast("f")
    )
    offsets = column.offsets.to_pylist()
    base = offsets[0]
    valid = column.is_valid().to_pylist()
    return [PackedVector(values[offsets[i] - base : offsets[i + 1] - base]) if valid[i] else None for i in range(len(column))]


def _refs(text: str | None) -> dict[str, list[tuple[str, str]]]:
    if not text:
        return {}
    return {p: [(c, u) for c, u in targets] for p, targets in json.loads(text).items()}


def row_size(row: Row) -> int:
    """A cheap estimate of a row's size in a chunk, to bound chunks by bytes."""
    vec = sum(len(v) for v in row.vectors.values()) + sum(len(x) for m in row.multi_vectors.values() for x in m)
    return 64 + 4 * vec + (len(row.props_json) if row.props_json is not None else 32 * len(row.properties))

"""Two adjustments to how weaviate-client decodes query results, for the backup's reads.

The client has no option for either, so each wraps one of its private functions, once per
process, keeping what every other caller gets unchanged:

- Dates: the client parses a gRPC `date_value` with `_datetime_from_weaviate_str`, dropping
  the digits past the microsecond that Weaviate stores. The wrapper returns the same datetime
  as a `WeaviateDate` carrying the server's text, which the codec stores.
- Vectors: the client turns each vector's float32 bytes into a list of Python floats
  (`_ByteOps.decode_float32s`), which the backup packed straight back into float32 bytes;
  both were about a sixth of the backup's CPU (profiled on 100,000 384-dim objects). The
  wrapper returns a `PackedVector` over the bytes instead: a list to the client, bytes to
  the codec.

Both wrappers act only inside `backup_decoding()`, on the thread that entered it; everywhere
else they call the client's own function.

If a client version renames these functions, `install` leaves it alone: vectors are then only
slower, and the fidelity test that pins nanoseconds fails rather than dates truncating quietly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from davit.adapters.weaviate.codec import PackedVector

_local = threading.local()
_lock = threading.Lock()


class WeaviateDate(datetime):
    """A date property as the client gives it (a datetime, so to the microsecond), with the text
    the server sent beside it: RFC 3339 with up to nanoseconds, which is what Weaviate stores."""

    text: str


@contextmanager
def backup_decoding() -> Iterator[None]:
    """Results decoded on this thread meanwhile keep dates' text and vectors' float32."""
    _local.active = True
    try:
        yield
    finally:
        _local.active = False


def install() -> None:
    with _lock:
        _wrap_date_parsing()
        _wrap_vector_decoding()


def _wrap_date_parsing() -> None:
    from weaviate.collections.queries import base_executor

    parse: Callable[[str], datetime | None] | None = getattr(base_executor, "_datetime_from_weaviate_str", None)
    if parse is None or getattr(parse, "davit", False):
        return

    def parse_keeping_text(string: str) -> datetime | None:
        parsed = parse(string)
        # datetime.min is the client's stand-in for a year it cannot represent (0): the text
        # beside it still restores the server's value.
        if parsed is None or not getattr(_local, "active", False):
            return parsed
        out = WeaviateDate(
            parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second, parsed.microsecond, parsed.tzinfo
        )
        out.text = string
        return out

    parse_keeping_text.davit = True  # type: ignore[attr-defined]
    base_executor._datetime_from_weaviate_str = parse_keeping_text


def _wrap_vector_decoding() -> None:
    from weaviate.collections.grpc import shared

    ops: Any = getattr(shared, "_ByteOps", None)
    decode: Callable[[bytes], list[float]] | None = getattr(ops, "decode_float32s", None)
    if decode is None or getattr(decode, "davit", False):
        return

    def decode_keeping_float32(byte_vector: bytes) -> list[float]:
        if getattr(_local, "active", False):
            return PackedVector(memoryview(byte_vector).cast("f"))
        return decode(byte_vector)

    decode_keeping_float32.davit = True  # type: ignore[attr-defined]
    ops.decode_float32s = staticmethod(decode_keeping_float32)

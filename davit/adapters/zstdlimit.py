"""Decompressing a zstd frame read from a repository with a bound that holds whatever it claims.

`ZstdDecompressor.decompress(data, max_output_size=N)` uses N only when the frame's header does
not record its content size; a header that does (as `compress` writes it) is believed, and the
whole content is decompressed into one buffer of that size. A repository's writer chooses the
header: a tree of a few hundred KiB of zeros declaring 16 GiB took a reader (`davit check`, a
restore's plan) to 16 GiB of memory. Here a header declaring more than the limit is refused
before anything is decompressed; one declaring no size is bounded by `max_output_size`, and
`decompress` fails a frame whose content differs from its declared size. Everything else is
`decompress` as before (the first frame only; a truncated or foreign frame a `ZstdError`).
"""

from __future__ import annotations

import zstandard


class TooLarge(Exception):
    """The frame declares more than the limit."""


def decompress_bounded(data: bytes, limit: int, decompressor: zstandard.ZstdDecompressor | None = None) -> bytes:
    """The first zstd frame of `data` decompressed into at most `limit` bytes: `TooLarge` if its
    header declares more, `zstandard.ZstdError` if it is not zstd, truncated, or larger than
    `limit` without declaring a size. `decompressor`: one the caller reuses (a thread's own)."""
    declared = zstandard.get_frame_parameters(data).content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > limit:
        raise TooLarge(f"its frame declares {declared:,} bytes")
    return (decompressor or zstandard.ZstdDecompressor()).decompress(data, max_output_size=limit)

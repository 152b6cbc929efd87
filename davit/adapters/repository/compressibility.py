"""Whether a chunk is worth compressing, judged on a sample of it.

Random-looking data (already compressed archives, media, encrypted files: more than half of a
typical tree's bytes) does not shrink under zstd, which still reads all of it to find that out.
zstd compresses a small sample (`SAMPLES` slices of `SAMPLE` bytes spread over the chunk) in a
few microseconds; a chunk whose sample does not shrink by `MIN_SAVING` is stored as it is
(CODEC_RAW, which every version of davit reads), as restic's `auto` and borg's `auto` do. A
chunk that mixes both (a zero run inside random bytes) shows it in some slice and is compressed
whole; one whose compressible part falls between the slices stores that part uncompressed, as
the price of not compressing everything twice.
"""

from __future__ import annotations

from typing import Protocol

SAMPLE = 16 << 10
SAMPLES = 4
MIN_SAVING = 1 / 32  # the sample must shrink by at least this share to compress the chunk


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...


def incompressible(plain: bytes | memoryview, compressor: Compressor) -> bool:
    """True if `plain` is large enough to sample and its sample does not shrink by `MIN_SAVING`."""
    size = len(plain)
    if size < 4 * SAMPLE * SAMPLES:
        return False  # small: compressing it whole costs about what judging it would
    view = memoryview(plain)
    step = size // SAMPLES
    sample = b"".join(view[i * step : i * step + SAMPLE] for i in range(SAMPLES))
    return len(compressor.compress(sample)) > len(sample) * (1 - MIN_SAVING)

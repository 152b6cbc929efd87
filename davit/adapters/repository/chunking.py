"""How a file's content is cut into chunks: a repository's `chunking`, recorded in its config.

A new repository records content-defined chunking (FastCDC 2020, through pyfastcdc's compiled
chunker) in its `config.json`, so every host that backs up into it cuts the same content at the
same places and their chunks dedupe. An insert moves only the boundaries near it: the chunks
it touches change, the rest of the file is found again. A repository made before has no entry:
it is cut in fixed pieces of the daemon's `chunk_size` as it always was. Either way a snapshot
is a list of chunk ids per file; a restore never asks how they were cut, so snapshots made
with fixed chunks stay readable, and a file whose parent entry is unchanged keeps its chunks.

`cut` streams: it holds one read block (`read_size`) and the chunk carried over from the block
before (the last one, whose end the block's end may have decided; under `max_size`); the
chunks are views of that block (no copy), and a block lives until the last chunk cut from it
has been encoded. From a file, the carried-over chunk is read again at the start of the next
block (a seek back; the page cache serves it) rather than copied in front of it: that copy
was a fresh 8-12 MiB buffer per block, filled while holding the GIL, which stalled every
other thread of the backup (issue 18's profile: the largest cost of the reading thread).
A cut point FastCDC finds depends only on the bytes before it, so a boundary never depends on
where a read ended: the same content gives the same chunks whatever the read sizes
(tests/unit/test_chunking.py cuts one content with many read sizes, from a stream and a file).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pyfastcdc.cy.fastcdc import FastCDC  # the compiled chunker: never the pure-Python fallback

from davit.domain.errors import PermanentError

FIXED = "fixed"
FASTCDC = "fastcdc2020"
DEFAULT_SIZE = 1 << 20
NORMALIZATION = 1  # FastCDC's normalized chunking level, as fastcdc-rs and pyfastcdc default
# pyfastcdc's bounds for each size
_BOUNDS = {"min_size": (64, 1 << 20), "avg_size": (256, 4 << 20), "max_size": (1024, 16 << 20)}


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ReadsInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class Chunking:
    """Sizes in bytes, pyfastcdc's parameters as they are passed to it. For FastCDC, `avg_size`
    sets its masks (log2(avg_size) bits, normalized by one either side of it): a cut point is
    looked for from `min_size` on, with the harder mask up to `avg_size` and the easier past it."""

    algorithm: str
    min_size: int
    avg_size: int
    max_size: int
    keyed: bool = False  # an encrypted repository's gear table is seeded from its key

    def with_key(self) -> Chunking:
        return Chunking(self.algorithm, self.min_size, self.avg_size, self.max_size, keyed=self.algorithm == FASTCDC)

    @classmethod
    def fastcdc(cls, size: int = DEFAULT_SIZE) -> Chunking:
        """Chunks of about 3/4 `size` on average: never under `size` / 2 (restic's and borg's
        512 KiB for 1 MiB), a cut point past it found with probability 2 / `size` per byte, at
        most 4 `size` (their 8 MiB would double the memory `inflight_chunks` chunks may take).
        FastCDC never looks at the bytes under the minimum, so the larger the minimum's share of
        the mean, the less the chunker costs: this one scans a third of the bytes (a target of
        `size` past the minimum would scan two thirds, at twice the CPU, and store twice as much
        after small inserts; bench/chunking.py measured both)."""
        return cls(FASTCDC, size // 2, size // 2, size * 4)

    @classmethod
    def around(cls, chunk_size: int) -> Chunking:
        """FastCDC for the daemon's `chunk_size` (`chunk_size_kib`) rounded down to a power of
        two, at most 2 MiB (pyfastcdc's min_size is at most 1 MiB)."""
        return cls.fastcdc(1 << (min(max(chunk_size, 2048), 2 << 20).bit_length() - 1))

    @classmethod
    def fixed(cls, size: int) -> Chunking:
        return cls(FIXED, size, size, size)

    def to_config(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "normalization": NORMALIZATION,
            "keyed": self.keyed,
        }

    @classmethod
    def from_config(cls, section: object, where: str) -> Chunking:
        """The `chunking` section of a repository's config; refused (`PermanentError`) unless
        it is one this version cuts exactly as the writer did."""
        if not isinstance(section, dict) or section.get("algorithm") != FASTCDC:
            raise PermanentError(f"{where}: its config.json names a chunking this version of davit does not know")
        sizes = {}
        for name, (low, high) in _BOUNDS.items():
            value = section.get(name)
            if type(value) is not int or not low <= value <= high:
                raise PermanentError(f"{where}: its config.json has a chunking {name} out of range")
            sizes[name] = value
        if section.get("normalization") != NORMALIZATION or not sizes["min_size"] <= sizes["avg_size"] <= sizes["max_size"]:
            raise PermanentError(f"{where}: its config.json has a chunking this version of davit cannot follow")
        if sizes["avg_size"] & (sizes["avg_size"] - 1):
            raise PermanentError(f"{where}: its config.json has a chunking avg_size that is not a power of two")
        keyed = section.get("keyed", False)
        if type(keyed) is not bool:
            raise PermanentError(f"{where}: its config.json has a chunking whose keyed is not true or false")
        return cls(FASTCDC, **sizes, keyed=keyed)

    @property
    def one_chunk_up_to(self) -> int:
        """A file of at most this many bytes is one chunk (a worker reads it whole)."""
        return self.min_size if self.algorithm == FASTCDC else self.max_size - 1

    @property
    def max_chunk(self) -> int:
        return self.max_size

    def chunker(self, seed: int = 0) -> Chunker:
        """`seed`: the repository key's (`RepositoryKey.chunker_seed`) if `keyed`, else 0."""
        if self.keyed != (seed != 0):
            raise ValueError("a keyed chunking needs the repository key's seed, and only it")
        return Chunker(self, seed)


class Chunker:
    """Cuts streams by one `Chunking`. The FastCDC object only holds the parameters and gear
    table; each `cut` has its own position, so one Chunker serves several threads."""

    def __init__(self, chunking: Chunking, seed: int = 0) -> None:
        self.chunking = chunking
        self.read_size = max(2 * chunking.max_size, 8 << 20) if chunking.algorithm == FASTCDC else chunking.max_size
        self._cdc = (
            FastCDC(
                chunking.avg_size,
                min_size=chunking.min_size,
                max_size=chunking.max_size,
                normalized_chunking=NORMALIZATION,
                seed=seed,
            )
            if chunking.algorithm == FASTCDC
            else None
        )
        # A run of zeros (disk images, sparse files) is the slowest input for FastCDC: no cut
        # point is found, so every byte up to max_size is scanned. Where a chunk's whole window
        # (max_size bytes) is zeros, its cut is the one FastCDC made once here on zeros, found
        # by comparing bytes instead (the cut depends only on the bytes from the chunk's start).
        self._zeros = bytes(chunking.max_size) if self._cdc is not None else b""
        self._zero_cut = next(iter(self._cdc.cut_buf(self._zeros))).length if self._cdc is not None else 0
        # Every such chunk is this one object (`is` tells it apart): a backup names and compresses
        # it once, not once per chunk of every zero run.
        self.zero_chunk: bytes = self._zeros[: self._zero_cut] if self._zero_cut < len(self._zeros) else self._zeros

    def cut(self, source: Readable) -> Iterator[bytes | memoryview]:
        """The chunks of `source` read to its end, in order (none for an empty one)."""
        if self._cdc is None:
            while data := source.read(self.read_size):
                yield data
            return
        rewind = source if isinstance(source, io.FileIO) and source.seekable() else None  # a file: read the carried chunk again
        held: bytes | memoryview = b""
        while True:
            if held and rewind is not None:
                rewind.seek(-len(held), os.SEEK_CUR)
                held = b""
            buf, ended = _read_block(source, held, self.read_size)
            if not buf:
                return
            held = yield from self._cut_block(buf, ended)
            if ended:
                return

    def cut_into(
        self, source: ReadsInto, buffer: bytearray, filled: Callable[[int, int], None] | None = None
    ) -> Iterator[memoryview | bytes]:
        """The chunks of `source` read to its end, cut where `cut` cuts them, every block read
        into the same `buffer` (at least `read_size` bytes). Each chunk is a view of `buffer`,
        valid only until the next one is asked for: for a consumer that stores a chunk before it
        asks for the next (`ChunkWriter.put`; `Repository.encode` copies a view it keeps).
        `filled(start, end)` is told each range of `buffer` a read has just filled.

        Why: a stream read with `read` (a pipe from `psql`) made a new block of bytes every
        time, joined from the pieces the reads returned and again with the carried chunk; those
        multi-MiB blocks of varying sizes, freed in each worker thread's own malloc arena,
        fragmented davitd's heap (issue 19: VmHWM grew to 310 MB over five backups of a 1.1 GB
        database while Python held almost nothing). One buffer reused, and the carried chunk
        moved to its front (a memmove, under `max_size`), make no block-sized allocation at all."""
        if len(buffer) < self.read_size:
            raise ValueError(f"a buffer of {len(buffer)} bytes is under the chunker's read size {self.read_size}")
        view = memoryview(buffer)[: self.read_size]
        held = 0
        while True:
            got, ended = _fill(source, view, held, filled)
            if not got:
                return
            if self._cdc is None:
                yield view[:got]
                rest: bytes | memoryview = b""
            else:
                rest = yield from self._cut_block(buffer, ended, got)
            if ended:
                return
            held = len(rest)
            view[:held] = view[got - held : got]  # overlapping ranges: memoryview copies as memmove

    def _cut_block(
        self, buf: bytes | bytearray, ended: bool, size: int = -1
    ) -> Generator[memoryview | bytes, None, memoryview | bytes]:
        """Yield the chunks of `buf` (its first `size` bytes, or all of it) whose end is final;
        return the rest (the last chunk, if the bytes after the block may move its end)."""
        assert self._cdc is not None
        size = len(buf) if size < 0 else size
        view, pos = memoryview(buf)[:size], 0
        window = self.chunking.max_size
        while pos < size:
            if pos + window <= size and buf.startswith(self._zeros, pos):
                yield self.zero_chunk
                pos += self._zero_cut
                continue
            end = pos + next(iter(self._cdc.cut_buf(view[pos:]))).length
            if end == size and not ended:
                # No cut point found before the block's end (or the rest is under min_size):
                # the next bytes decide where this chunk ends. Any earlier cut is final, as
                # FastCDC decides a cut from the bytes before it alone.
                return view[pos:]
            yield view[pos:end]
            pos = end
        return b""


def _fill(source: ReadsInto, view: memoryview, start: int, filled: Callable[[int, int], None] | None) -> tuple[int, bool]:
    """Read `source` into `view` from `start` until it is full; the bytes in it and whether
    `source` ended."""
    got, size = start, len(view)
    while got < size:
        n = source.readinto(view[got:])
        if not n:
            return got, True
        if filled is not None:
            filled(got, got + n)
        got += n
    return got, False


def _read_block(source: Readable, held: bytes | memoryview, size: int) -> tuple[bytes, bool]:
    """`held` followed by reads of `source` up to `size` bytes in all; and whether it ended."""
    pieces = [held] if held else []
    got = len(held)
    ended = False
    while got < size:
        piece = source.read(size - got)
        if not piece:
            ended = True
            break
        pieces.append(piece)
        got += len(piece)
    if len(pieces) == 1 and isinstance(pieces[0], bytes):
        return pieces[0], ended
    return b"".join(pieces), ended

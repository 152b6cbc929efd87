"""The chunker a repository records: FastCDC cuts the same content at the same places however it
is read, an insert changes only the chunks around it, and a config's chunking is checked."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from pyfastcdc.cy.fastcdc import FastCDC

from davit.adapters.repository.chunking import FASTCDC, Chunking
from davit.domain.errors import PermanentError

SMALL = Chunking.fastcdc(64 << 10)  # min 32 KiB, mean about 48 KiB, max 256 KiB: many chunks from little data


def content(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


class ShortReads(io.RawIOBase):
    """A stream that returns fewer bytes than asked, at random (a pipe, a helper's archive)."""

    def __init__(self, data: bytes, seed: int) -> None:
        self.data, self.pos, self.rng = data, 0, random.Random(seed)

    def read(self, size: int = -1, /) -> bytes:
        n = self.rng.randint(1, max(1, size))
        piece = self.data[self.pos : self.pos + n]
        self.pos += len(piece)
        return piece

    def readinto(self, buffer: memoryview, /) -> int:  # type: ignore[override]
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


def sizes(chunking: Chunking, stream: io.RawIOBase | io.BytesIO) -> list[int]:
    return [len(c) for c in chunking.chunker().cut(stream)]


def test_the_same_content_is_cut_at_the_same_places_whatever_the_reads_return() -> None:
    data = content(6 << 20)
    whole = sizes(SMALL, io.BytesIO(data))
    for seed in range(4):
        assert sizes(SMALL, ShortReads(data, seed)) == whole, f"seed {seed}"
    assert sum(whole) == len(data)


def test_cut_points_are_those_recorded_when_the_chunking_was_introduced() -> None:
    # Cut points are part of the repository format: a pyfastcdc whose cuts moved would store every
    # changed file anew. These were cut by the compiled chunker and equal those of pyfastcdc's
    # own pure-Python implementation of FastCDC 2020 on the same bytes.
    cut = sizes(SMALL, io.BytesIO(content(1 << 20)))
    assert cut == [
        *(91119, 87256, 53757, 36284, 35991, 73291, 34796, 69508, 38783, 45497),
        *(44237, 86888, 37695, 35421, 77695, 33665, 35144, 40059, 61956, 29534),
    ]


def disk_image(seed: int) -> bytes:
    """Random data with runs of zeros of all lengths, starting anywhere (a sparse disk image)."""
    rng = random.Random(seed)
    parts = []
    for i in range(24):
        parts.append(rng.randbytes(rng.randrange(1, 300_000)))
        parts.append(bytes((1, 100, 40_000, 300_000, 1 << 20, 3 << 20)[i % 6]))
    return b"".join(parts)


@pytest.mark.parametrize("seed", [0, 12345], ids=["public-gear-table", "keyed"])
def test_streaming_cuts_exactly_where_fastcdc_cuts_the_whole_content(seed: int) -> None:
    # The chunker reads in blocks, carries a chunk over, and skips scanning runs of zeros; none
    # of it may move a cut point from where FastCDC over the whole content puts it.
    chunking = SMALL.with_key() if seed else SMALL
    data = disk_image(seed=4)
    whole = FastCDC(SMALL.avg_size, min_size=SMALL.min_size, max_size=SMALL.max_size, normalized_chunking=1, seed=seed)
    expected = [c.length for c in whole.cut_buf(data)]
    for reads in range(3):
        assert [len(c) for c in chunking.chunker(seed).cut(ShortReads(data, reads))] == expected


def test_chunks_keep_within_their_bounds() -> None:
    cut = sizes(SMALL, io.BytesIO(content(6 << 20)))
    assert all(SMALL.min_size <= n <= SMALL.max_size for n in cut[:-1])
    mean = sum(cut) / len(cut)
    assert SMALL.min_size < mean < SMALL.max_size / 2, mean


def test_an_insert_changes_only_the_chunks_around_it() -> None:
    data = content(8 << 20)
    rng = random.Random(1)
    at = rng.randrange(len(data))
    changed = data[:at] + rng.randbytes(64) + data[at:]
    before = set(bytes(c) for c in SMALL.chunker().cut(io.BytesIO(data)))
    after = [bytes(c) for c in SMALL.chunker().cut(io.BytesIO(changed))]
    new = [c for c in after if c not in before]
    assert 1 <= len(new) <= 3, [len(c) for c in new]
    assert len(after) > 60


def test_a_run_of_zeros_is_cut_in_max_size_chunks_that_dedupe() -> None:
    cut = [bytes(c) for c in SMALL.chunker().cut(io.BytesIO(bytes(4 << 20)))]
    assert len(set(cut)) == 1 and len(cut[0]) == SMALL.max_size


def test_a_file_up_to_min_size_is_one_chunk() -> None:
    data = content(SMALL.one_chunk_up_to)
    assert sizes(SMALL, io.BytesIO(data)) == [len(data)]
    assert sizes(SMALL, io.BytesIO(b"")) == []


def test_fixed_chunking_cuts_pieces_of_its_size_as_davit_always_did() -> None:
    fixed = Chunking.fixed(64 << 10)
    assert sizes(fixed, io.BytesIO(content(200 << 10))) == [64 << 10] * 3 + [8 << 10]
    assert fixed.one_chunk_up_to == (64 << 10) - 1


def test_a_config_records_the_chunking_and_reads_it_back() -> None:
    assert Chunking.from_config(SMALL.to_config(), "repo") == SMALL
    default = Chunking.fastcdc()
    assert (default.algorithm, default.min_size, default.avg_size, default.max_size) == (FASTCDC, 512 << 10, 512 << 10, 4 << 20)


@pytest.mark.parametrize(
    "section",
    [
        pytest.param({**Chunking.fastcdc().to_config(), "algorithm": "rabin"}, id="unknown-algorithm"),
        pytest.param({**Chunking.fastcdc().to_config(), "max_size": 1 << 30}, id="max-out-of-range"),
        pytest.param({**Chunking.fastcdc().to_config(), "min_size": True}, id="min-not-an-int"),
        pytest.param({**Chunking.fastcdc().to_config(), "avg_size": 3 << 18}, id="avg-not-a-power-of-two"),
        pytest.param({**Chunking.fastcdc().to_config(), "normalization": 2}, id="other-normalization"),
        pytest.param({**Chunking.fastcdc().to_config(), "min_size": 2 << 20}, id="min-above-avg"),
        pytest.param("fastcdc2020", id="not-an-object"),
    ],
)
def test_a_chunking_this_version_cannot_follow_is_refused(section: object) -> None:
    with pytest.raises(PermanentError, match="chunking"):
        Chunking.from_config(section, "repo")


@pytest.mark.parametrize(
    ("kib", "min_kib"), [(1024, 512), (64, 32), (1000, 256), (65536, 1024)], ids=["default", "small", "rounded", "capped"]
)
def test_the_daemon_chunk_size_gives_the_chunking_of_a_new_repository(kib: int, min_kib: int) -> None:
    chunking = Chunking.around(kib << 10)
    assert chunking.min_size == min_kib << 10
    Chunking.from_config(chunking.to_config(), "repo")  # within pyfastcdc's bounds


def test_a_keyed_chunking_cuts_by_its_seed_and_refuses_to_cut_without_it() -> None:
    keyed = SMALL.with_key()
    data = content(2 << 20)
    assert Chunking.from_config(keyed.to_config(), "repo") == keyed
    seeded = [len(c) for c in keyed.chunker(seed=12345).cut(io.BytesIO(data))]
    assert seeded != sizes(SMALL, io.BytesIO(data)) and sum(seeded) == len(data)
    with pytest.raises(ValueError, match="seed"):
        keyed.chunker()
    with pytest.raises(ValueError, match="seed"):
        SMALL.chunker(seed=12345)


def test_a_file_read_in_blocks_is_cut_where_fastcdc_cuts_its_whole_content(tmp_path: Path) -> None:
    # From a file, the chunk carried over a block's end is read again with the next block (a seek
    # back) instead of being copied in front of it: the cut points must not move either way.
    data = disk_image(seed=5)
    (tmp_path / "disk.img").write_bytes(data)
    whole = FastCDC(SMALL.avg_size, min_size=SMALL.min_size, max_size=SMALL.max_size, normalized_chunking=1)
    expected = [c.length for c in whole.cut_buf(data)]
    for read_size in (2 * SMALL.max_size, 2 * SMALL.max_size + 12_345, 1 << 20):  # at least twice max_size, as `Chunker` reads
        chunker = SMALL.chunker()
        chunker.read_size = read_size  # many blocks from a few MiB
        with open(tmp_path / "disk.img", "rb", buffering=0) as fh:
            chunks = [bytes(c) for c in chunker.cut(fh)]
        assert [len(c) for c in chunks] == expected, f"read size {read_size}"
        assert b"".join(chunks) == data


@pytest.mark.parametrize("seed", [0, 12345], ids=["public-gear-table", "keyed"])
def test_a_pipe_read_into_one_reused_buffer_is_cut_where_fastcdc_cuts_the_whole_content(seed: int) -> None:
    # A table's rows from psql are read into one buffer, reused for every block, the carried chunk
    # moved to its front: the cut points, and so the dedup with earlier backups, must not move.
    chunking = SMALL.with_key() if seed else SMALL
    data = disk_image(seed=6)
    whole = FastCDC(SMALL.avg_size, min_size=SMALL.min_size, max_size=SMALL.max_size, normalized_chunking=1, seed=seed)
    expected = [c.length for c in whole.cut_buf(data)]
    for reads, read_size in enumerate((2 * SMALL.max_size, 2 * SMALL.max_size + 12_345, 8 << 20)):
        chunker = chunking.chunker(seed)
        chunker.read_size = read_size  # many blocks from a few MiB
        buffer = bytearray(read_size)
        chunks = []
        for chunk in chunker.cut_into(ShortReads(data, reads), buffer):
            assert chunk is chunker.zero_chunk or (isinstance(chunk, memoryview) and chunk.obj is buffer)
            chunks.append(bytes(chunk))  # copied before the next is asked for, as a chunk is stored
        assert [len(c) for c in chunks] == expected, f"read size {read_size}"
        assert b"".join(chunks) == data


def test_every_byte_read_into_the_buffer_is_reported_once_so_rows_can_be_counted() -> None:
    rows = b"".join(b"%d\tline %d\n" % (i, i * 7) for i in range(300_000))
    chunker = SMALL.chunker()
    chunker.read_size = 2 * SMALL.max_size
    buffer = bytearray(chunker.read_size)
    seen = []
    counted = 0

    def filled(start: int, end: int) -> None:
        nonlocal counted
        seen.append(bytes(buffer[start:end]))
        counted += buffer.count(b"\n", start, end)

    stored = b"".join(bytes(c) for c in chunker.cut_into(ShortReads(rows, 1), buffer, filled))
    assert stored == rows and b"".join(seen) == rows and counted == 300_000


def test_fixed_chunking_read_into_a_buffer_cuts_the_pieces_it_always_did() -> None:
    fixed = Chunking.fixed(64 << 10)
    data = content(200 << 10)
    chunks = [bytes(c) for c in fixed.chunker().cut_into(ShortReads(data, 2), bytearray(64 << 10))]
    assert [len(c) for c in chunks] == [64 << 10] * 3 + [8 << 10] and b"".join(chunks) == data
    assert [bytes(c) for c in SMALL.chunker().cut_into(io.BytesIO(b""), bytearray(8 << 20))] == []


def test_a_buffer_smaller_than_a_block_is_refused() -> None:
    with pytest.raises(ValueError, match="read size"):
        next(SMALL.chunker().cut_into(io.BytesIO(b"x"), bytearray(1 << 20)))

"""A chunk its writer says is text (the SQL statements of mysql.backup) is compressed without
the compressibility sample; every other chunk is still judged on it, and either way the chunk
reads back byte for byte under the same id."""

from __future__ import annotations

import os
from pathlib import Path

from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.compressibility import SAMPLE, SAMPLES
from davit.adapters.repository.packs import CODEC_RAW, CODEC_SEALED, CODEC_ZSTD
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning

TUNING = Tuning(pack_size=8 << 20, checkpoint_seconds=60)


def _sample_fooling_chunk() -> bytes:
    """Random bytes exactly where the sample looks, SQL text everywhere else."""
    size = 4 * SAMPLE * SAMPLES * 2
    step = size // SAMPLES
    text = b"INSERT INTO `t` (`id`,`name`) VALUES\n" + b"(1,'a row like the others'),\n" * (size // 28)
    out = bytearray(text[:size])
    for i in range(SAMPLES):
        out[i * step : i * step + SAMPLE] = os.urandom(SAMPLE)
    return bytes(out)


def _stored(repo: Repository, cid: str) -> tuple[int, int, int]:
    ref = repo.blob_ref(bytes.fromhex(cid))
    assert ref is not None
    return ref.codec, ref.stored_len, ref.plain_len


def test_sql_text_is_compressed_even_where_the_sample_would_have_said_no(tmp_path: Path) -> None:
    chunk = _sample_fooling_chunk()
    repo = Repository.open(tmp_path / "repo")
    writer = ChunkWriter(repo, TUNING)
    cid = writer.put(chunk, text=True)
    writer.seal()
    codec, stored, plain = _stored(repo, cid)
    assert codec == CODEC_ZSTD and stored < plain // 2
    assert repo.read_chunk(bytes.fromhex(cid)) == chunk


def test_a_chunk_not_said_to_be_text_is_still_judged_on_its_sample(tmp_path: Path) -> None:
    chunk = _sample_fooling_chunk()
    repo = Repository.open(tmp_path / "repo")
    writer = ChunkWriter(repo, TUNING)
    cid = writer.put(chunk)
    writer.seal()
    assert _stored(repo, cid)[0] == CODEC_RAW
    assert repo.read_chunk(bytes.fromhex(cid)) == chunk


def test_text_that_does_not_shrink_after_all_is_stored_raw_and_reads_back(tmp_path: Path) -> None:
    chunk = os.urandom(300 << 10)
    repo = Repository.open(tmp_path / "repo", passphrase="correct horse")
    writer = ChunkWriter(repo, TUNING)
    cid = writer.put(chunk, text=True)
    writer.seal()
    assert _stored(repo, cid)[0] == CODEC_RAW | CODEC_SEALED
    assert repo.read_chunk(bytes.fromhex(cid)) == chunk

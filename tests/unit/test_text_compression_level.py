"""Chunks a caller marks as text (a SQL backup's statements) are compressed at the tuning's
`text_compression_level`, the others at the repository's `compression_level`; either reads back."""

from __future__ import annotations

import random

import zstandard

from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.daemon.config import DataPathSection


def _statement(seed: int) -> bytes:
    rnd = random.Random(seed)
    rows = (f"({i},{rnd.randrange(10**6)},'{'-'.join(f'{rnd.randrange(10**11):011d}' for _ in range(10))}')" for i in range(3000))
    return b"INSERT INTO `t` (`id`,`k`,`c`) VALUES\n" + ",\n".join(rows).encode() + b";\n"


def _stored(tuning: Tuning, data: bytes, text: bool, tmp: object) -> tuple[Repository, str, int]:
    repo = Repository(MemoryBackend(), compression_level=tuning.compression_level, local_dir=tmp)  # type: ignore[arg-type]
    writer = ChunkWriter(repo, tuning)
    cid = writer.put(data, text=text)
    writer.seal()
    return repo, cid, writer.bytes_stored


def test_text_chunks_take_the_text_level_and_others_the_repository_level(tmp_path: object) -> None:
    data = _statement(1)
    tuning = Tuning(compression_level=19, text_compression_level=1)
    repo, cid, stored = _stored(tuning, data, True, tmp_path)
    assert stored == len(zstandard.ZstdCompressor(level=1).compress(data))
    assert repo.read_chunk(bytes.fromhex(cid)) == data
    repo, cid, stored = _stored(tuning, data, False, tmp_path)
    assert stored == len(zstandard.ZstdCompressor(level=19).compress(data))
    assert repo.read_chunk(bytes.fromhex(cid)) == data


def test_the_daemon_config_sets_the_text_level_and_defaults_to_1() -> None:
    assert DataPathSection().tuning().text_compression_level == 1
    assert DataPathSection(text_compression_level=5).tuning().text_compression_level == 5

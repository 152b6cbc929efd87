"""A SQL snapshot's tree whose zstd frame claims a huge size is refused before it is decompressed.

Whoever writes a repository writes its trees: a frame of a few KiB of zeros may declare (and
hold) gigabytes, and `davit check` or a restore reading it must refuse it at the limit, not
hold the whole of it in memory first (python-zstandard's `max_output_size` is not used when
the frame declares its size)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from davit.adapters import sqltree
from davit.adapters.mongo import layout as mongo_layout
from davit.adapters.mysql.layout import read_tree
from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.packs import CODEC_ZSTD, BlobRef
from davit.adapters.repository.repository import Repository
from davit.adapters.sqltree import TreeRefused
from davit.adapters.zstdlimit import TooLarge, decompress_bounded
from davit.domain.errors import CorruptChunk

USERS = b'{"mysql": "users", "statements": []}\n'


def test_a_tree_declaring_more_than_the_limit_is_refused_naming_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqltree, "TREE_LIMIT", 1 << 20)
    bomb = zstandard.ZstdCompressor().compress(USERS + b" " * (8 << 20))  # ~1 KiB declaring 8 MiB
    assert len(bomb) < 4096
    with pytest.raises(TreeRefused, match="snapshot 1234abcd: the tree does not decompress within 1 MiB"):
        list(read_tree(bomb, "snapshot 1234abcd"))


def test_a_tree_not_declaring_its_size_is_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqltree, "TREE_LIMIT", 1 << 20)
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(USERS + b" " * (8 << 20))
    with pytest.raises(TreeRefused, match="does not decompress within 1 MiB"):
        list(read_tree(bomb, "snapshot 1234abcd"))


def test_a_tree_within_the_limit_reads_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqltree, "TREE_LIMIT", 1 << 20)
    entries = list(read_tree(zstandard.ZstdCompressor().compress(USERS), "snapshot 1234abcd"))
    assert [type(e).__name__ for e in entries] == ["UsersEntry"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(zstandard.ZstdCompressor().compress(USERS)[:-3], zstandard.ZstdError, id="truncated"),
        pytest.param(b"", zstandard.ZstdError, id="empty"),
        pytest.param(b"not zstd at all", zstandard.ZstdError, id="foreign"),
        pytest.param(zstandard.ZstdCompressor().compress(b"x" * 5000), TooLarge, id="declares-more"),
    ],
)
def test_a_frame_that_is_truncated_foreign_or_too_large_fails(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decompress_bounded(data, 4096)


def test_a_stored_chunk_whose_frame_declares_more_than_its_index_length_is_refused_before_decompressing(
    tmp_path: Path,
) -> None:
    """A pack's writer chooses the frame: one of a few KiB declaring 64 MiB must not be
    decompressed into 64 MiB of memory before the chunk is found not to be what the index says."""
    repo = Repository.open(MemoryBackend(), local_dir=tmp_path)
    try:
        bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
        ref = BlobRef(pack="p" * 32, offset=0, stored_len=len(bomb), plain_len=4096, codec=CODEC_ZSTD)
        with pytest.raises(CorruptChunk, match="declares 67,108,864 bytes"):
            repo._open_stored(b"\1" * 32, ref, bomb)
    finally:
        repo.close()


def test_a_mongodb_collection_tree_declaring_more_than_its_limit_is_refused_before_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mongo_layout, "TREE_LIMIT", 1 << 20)
    bomb = zstandard.ZstdCompressor().compress(b"\n" * (8 << 20))
    with pytest.raises(zstandard.ZstdError, match="declares 8,388,608 bytes"):
        list(mongo_layout.read_tree(bomb))

"""Knobs of the data path, set from the daemon config (`[data_path]` in davit.toml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    chunk_size: int = 1 << 20  # bytes of a file per chunk
    pack_size: int = 32 << 20  # a checkpoint seals the pack once it holds this much
    pack_max_chunks: int = 2000  # ... or this many chunks
    checkpoint_seconds: float = 3.0  # ... or this long has passed
    workers: int = 2  # threads hashing, compressing, decompressing
    inflight_chunks: int = 16  # chunks read ahead of the writer (bounds memory)
    compression_level: int = 3
    # Chunks a caller marks as text (a SQL backup's INSERT statements): zstd level 1 made them
    # smaller than level 3 did (bench/sql.py's sysbench-like table: 0.447 against 0.481 of its 123 MB)
    # in 0.35 CPU s instead of 1.18, and compressing was most of a MariaDB backup's CPU (bench/README.md).
    text_compression_level: int = 1
    remote_reads: int = 8  # ranged reads in flight restoring from a remote repository (network, not CPU)
    remote_read_ahead: int = 32 << 20  # plain bytes read ahead of the writer from a remote repository (peak RSS)

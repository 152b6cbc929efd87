"""The shifted-insert case of bench/files.py: how much a repository grows when a big file gets a
few small inserts, which shift everything after them.

One file of random (incompressible) bytes is backed up; then 12 inserts of 64 bytes each go in
at random places (seeded, so every tool and every run sees the same file) and it is backed up
again. A tool cutting fixed-size chunks stores most of the file again after the first insert; a
content-defined chunker stores only the chunks around each insert. The figure is the bytes the
second backup added to the repository directory (sum of its files' sizes, before and after).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INSERTS, INSERT_BYTES = 12, 64
MiB = 1 << 20
SEED = 20260612


def write_original(path: Path, size: int) -> None:
    """`size` seeded random bytes, written 4 MiB at a time."""
    rng = random.Random(SEED)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            piece = min(left, 4 * MiB)
            fh.write(rng.randbytes(piece))
            left -= piece


def write_shifted(original: Path, path: Path) -> None:
    """`original` with INSERTS x INSERT_BYTES seeded random bytes inserted at random offsets."""
    rng = random.Random(SEED + 1)
    size = original.stat().st_size
    at = sorted(rng.randrange(size) for _ in range(INSERTS))
    with open(original, "rb") as src, open(path, "wb") as dst:
        done = 0
        for offset in [*at, size]:
            while done < offset:
                piece = src.read(min(offset - done, 4 * MiB))
                dst.write(piece)
                done += len(piece)
            if offset < size:
                dst.write(rng.randbytes(INSERT_BYTES))


def repo_bytes(repo: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(repo):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@dataclass(frozen=True)
class Growth:
    first: int  # repository bytes after the first backup
    added: int  # bytes the second backup (after the inserts) added


def growth(work: Path, size_mb: int, repo: Path, backup: Callable[[Path, int], None]) -> Growth:
    """Back `work/src/big.bin` up with `backup(src_dir, n)` twice (n = 1, 2), the inserts
    between; the repository's size after each."""
    versions = work / "versions"
    original, shifted = versions / "original.bin", versions / "shifted.bin"
    if not shifted.exists() or original.stat().st_size != size_mb * MiB:
        versions.mkdir(parents=True, exist_ok=True)
        write_original(original, size_mb * MiB)
        write_shifted(original, shifted)
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    big = src / "big.bin"
    big.unlink(missing_ok=True)
    os.link(original, big)  # a hard link: no copy of a 256 MiB file per tool
    backup(src, 1)
    first = repo_bytes(repo)
    big.unlink()
    os.link(shifted, big)
    backup(src, 2)
    return Growth(first, repo_bytes(repo) - first)

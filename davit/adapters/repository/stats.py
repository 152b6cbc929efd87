"""`davit repository stats`: what a repository holds and what it costs to store.

- `stored_bytes`: every object of the repository, as its storage lists them (packs, indexes,
  trees, manifests, staging, locks); `pack_bytes` the packs alone.
- `chunks` / `plain_bytes`: the distinct chunks the indexes name, and their size before
  compression (a chunk stored twice, by two backups at once, counts once).
- `logical_bytes`: the sum of the usable snapshots' `stats.bytes` (what their sources held),
  also per job.
- `dedup_ratio` = logical / plain bytes (what deduplication saves), `compression_ratio` =
  plain / pack bytes (what compression saves); None when the divisor is 0.

Read-only and lock-free: it works with a credential that may only read, and it reads the
manifests and indexes, never a chunk, so an encrypted repository needs no passphrase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from davit.adapters.repository.check import PACK_ID, pack_key
from davit.adapters.repository.repository import Repository
from davit.domain.errors import CorruptChunk


@dataclass
class RepositoryStats:
    snapshots: int = 0
    damaged_snapshots: int = 0
    packs: int = 0
    pack_bytes: int = 0
    stored_bytes: int = 0
    chunks: int = 0
    plain_bytes: int = 0
    logical_bytes: int = 0
    unreadable_indexes: int = 0
    jobs: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def dedup_ratio(self) -> float | None:
        return self.logical_bytes / self.plain_bytes if self.plain_bytes else None

    @property
    def compression_ratio(self) -> float | None:
        return self.plain_bytes / self.pack_bytes if self.pack_bytes else None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "dedup_ratio": self.dedup_ratio, "compression_ratio": self.compression_ratio}


def repository_stats(repo: Repository) -> RepositoryStats:
    stats = RepositoryStats()
    for snap in repo.snapshots():
        stats.snapshots += 1
        size = snap.stats.get("bytes")
        size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0
        stats.logical_bytes += size
        job = stats.jobs.setdefault(snap.job, {"snapshots": 0, "logical_bytes": 0})
        job["snapshots"] += 1
        job["logical_bytes"] += size
    stats.damaged_snapshots = len(repo.damaged_snapshots())
    backend = repo.backend
    for info in backend.list(""):
        stats.stored_bytes += info.size
        pack = info.key.rpartition("/")[2].removesuffix(".pack")
        if info.key == pack_key(pack) and PACK_ID.match(pack):
            stats.packs += 1
            stats.pack_bytes += info.size
    seen: set[bytes] = set()
    for pack in repo.index_packs():
        try:
            entries = repo.read_index(pack)
        except CorruptChunk:
            entries = None
        if entries is None:
            stats.unreadable_indexes += 1  # damaged, or gone since listed: `repository check` says why
            continue
        for cid, ref in entries:
            if cid not in seen:
                seen.add(cid)
                stats.chunks += 1
                stats.plain_bytes += ref.plain_len
    return stats

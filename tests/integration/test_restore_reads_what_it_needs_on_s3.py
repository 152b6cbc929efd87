"""A restore from an S3 repository fetches only what the snapshot it restores needs: in a
repository holding a large snapshot and a small one, restoring the small one reads none of the
large one's packs, and only byte ranges (never whole packs), counted at the backend."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from davit.adapters.repository.backends.counting import CountingBackend
from davit.adapters.repository.backends.s3 import S3Backend
from davit.adapters.repository.repository import Repository
from tests.integration.test_files_adapter import backup, restore, snapshot_of
from tests.peers.state import S3Peer


class Fetches(CountingBackend):
    """Counts requests, and records how many bytes each read of a pack fetched."""

    def __init__(self, inner: S3Backend) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.pack_bytes: dict[str, int] = {}

    def _took(self, key: str, data: bytes | Sequence[bytes]) -> None:
        if key.startswith("packs/"):
            size = len(data) if isinstance(data, bytes) else sum(len(d) for d in data)
            with self.lock:
                self.pack_bytes[key] = self.pack_bytes.get(key, 0) + size

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        data = super().get(key, max_bytes)
        self._took(key, data)
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        data = super().get_range(key, offset, length)
        self._took(key, data)
        return data

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        data = super().get_ranges(key, ranges)
        self._took(key, data)
        return data


def test_restoring_a_small_snapshot_reads_only_its_own_packs(seaweedfs_peer: S3Peer, tmp_path: Path) -> None:
    s3 = S3Backend(
        seaweedfs_peer.bucket,
        f"restore-reads/{uuid.uuid4().hex[:10]}",
        endpoint=seaweedfs_peer.endpoint,
        path_style=True,
        access_key_id=seaweedfs_peer.access_key_id,
        secret_access_key=seaweedfs_peer.secret_access_key,
    )
    backend = Fetches(s3)
    repo = Repository.open(backend, local_dir=tmp_path / "home")
    large, small = tmp_path / "large", tmp_path / "small"
    large.mkdir()
    small.mkdir()
    # 6 MiB in 256 KiB packs: about 24 packs. Files of 256 KiB, each one chunk under FastCDC's
    # 512 KiB minimum (1 MiB files made a chunk or two each, chunks larger than a pack: 10 packs)
    for i in range(24):
        (large / f"blob{i}.bin").write_bytes(os.urandom(256 << 10))
    (small / "notes.txt").write_text("a small file of a small snapshot\n" * 20)
    backup(repo, large, "b-large", name="large")
    packs_of_large = {o.key for o in s3.list("packs/")}
    backup(repo, small, "b-small", name="job")
    packs_of_small = {o.key for o in s3.list("packs/")} - packs_of_large
    assert len(packs_of_large) >= 20 and len(packs_of_small) == 1

    backend.counts.reset()
    backend.pack_bytes.clear()
    reader = Repository.open(backend, local_dir=tmp_path / "restore-home")  # a fresh opener: nothing cached
    restore(reader, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(small)
    assert set(backend.pack_bytes) == packs_of_small  # not one byte of the large snapshot's packs
    stored = sum(o.size for o in s3.list("packs/"))
    assert sum(backend.pack_bytes.values()) < 4096 < stored // 1000  # the small file's chunk, of 6 MiB stored
    assert backend.counts["get", "packs/"] == 0  # ranges of a pack, never a whole pack fetched
    assert backend.counts.total(under="packs/") <= 2

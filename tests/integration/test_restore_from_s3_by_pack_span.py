"""A restore from an S3 repository reads its chunks by pack span: a snapshot of many small files
packed in a few packs comes back byte-identical in far fewer ranged requests than it has chunks
(it used to make one request per chunk, slower than restic on the benchmark), and a chunk
damaged on the server still stops the restore before its bytes reach a file."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from davit.adapters.repository.backends.counting import CountingBackend
from davit.adapters.repository.backends.s3 import S3Backend
from davit.adapters.repository.packs import pack_key
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import CorruptChunk
from tests.integration.test_files_adapter import backup, restore, snapshot_of
from tests.peers.state import S3Peer

FEW_PACKS = Tuning(chunk_size=64 << 10, pack_size=4 << 20, pack_max_chunks=2000, checkpoint_seconds=60)


def s3_repository(peer: S3Peer, home: Path) -> tuple[CountingBackend, Repository]:
    s3 = S3Backend(
        peer.bucket,
        f"restore-spans/{uuid.uuid4().hex[:10]}",
        endpoint=peer.endpoint,
        path_style=True,
        access_key_id=peer.access_key_id,
        secret_access_key=peer.secret_access_key,
    )
    backend = CountingBackend(s3)
    return backend, Repository.open(backend, local_dir=home)


def many_small_files(root: Path, count: int) -> None:
    rnd = random.Random(17)
    for i in range(count):
        folder = root / f"d{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(os.urandom(rnd.randrange(1_000, 9_000)))


def test_a_restore_of_many_chunks_in_few_packs_makes_few_ranged_requests(seaweedfs_peer: S3Peer, tmp_path: Path) -> None:
    backend, repo = s3_repository(seaweedfs_peer, tmp_path / "home")
    source = tmp_path / "source"
    many_small_files(source, 400)
    backup(repo, source, "b1", tuning=FEW_PACKS)
    chunks = sum(len(repo.read_index(p) or []) for p in repo.index_packs())
    assert chunks >= 400 and len(repo.index_packs()) <= 3

    backend.counts.reset()
    reader = Repository.open(backend, local_dir=tmp_path / "restore-home")  # nothing cached
    restore(reader, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)
    reads = backend.counts["get_range", "packs/"] + backend.counts["get_ranges", "packs/"]
    assert 1 <= reads <= 6, reads  # was one request per chunk: 400 and more
    assert backend.counts["get", "packs/"] == 0  # ranges, never whole packs


def test_a_chunk_damaged_on_the_server_stops_the_restore_before_its_bytes_are_written(
    seaweedfs_peer: S3Peer, tmp_path: Path
) -> None:
    backend, repo = s3_repository(seaweedfs_peer, tmp_path / "home")
    source = tmp_path / "source"
    many_small_files(source, 60)
    backup(repo, source, "b1", tuning=FEW_PACKS)
    pack = repo.index_packs()[0]
    entries = repo.read_index(pack) or []
    _cid, ref = entries[len(entries) // 2]
    data = bytearray(backend.get(pack_key(pack)))
    data[ref.offset + ref.stored_len // 2] ^= 0xFF
    backend.put(pack_key(pack), bytes(data))

    reader = Repository.open(backend, local_dir=tmp_path / "restore-home")
    with pytest.raises(CorruptChunk):
        restore(reader, tmp_path / "out")
    wanted = snapshot_of(source)
    restored = {k: v for k, v in snapshot_of(tmp_path / "out").items() if v[0] == "f"}
    assert restored  # the files before the damaged chunk were restored...
    for path, (_f, _mode, _mtime, digest) in restored.items():  # ...and not one holds a wrong byte
        assert digest == wanted[path][3]

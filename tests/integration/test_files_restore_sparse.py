"""files.restore of files with long runs of zeros (disk images): the zero chunks become holes,
the restored files read back byte-identical, a zero chunk is read and verified once per run
(a damaged stored copy still fails the run), a restore from S3 by pack span makes the same
holes, and `sparse = false` writes the zeros. Driven without a daemon, on real repositories
(the target on ext4; most Linux file systems keep holes)."""

from __future__ import annotations

import collections
import os
import uuid
from pathlib import Path

import pytest

from davit.adapters.files import holes
from davit.adapters.files.restore import FilesRestoreWork
from davit.adapters.files.treecheck import parsed
from davit.adapters.repository.backends.s3 import S3Backend
from davit.adapters.repository.chunking import Chunking
from davit.adapters.repository.packs import pack_path
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import CorruptChunk
from davit.domain.jobs import FilesRestoreJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, backup, snapshot_of
from tests.integration.test_files_content_defined_chunking import made_before_chunking_was_recorded
from tests.peers.state import S3Peer

ZERO_RUN = 2 << 20  # many chunks of the largest size (256 KiB) alike
SCALED = Chunking.fastcdc(64 << 10)


def disk_images(root: Path) -> dict[str, int]:
    """Files with zero runs inside and at the end; the bytes of zeros each holds."""
    root.mkdir()
    (root / "disk.img").write_bytes(os.urandom(100_000) + bytes(ZERO_RUN) + os.urandom(100_000) + bytes(ZERO_RUN))
    (root / "all-zeros.img").write_bytes(bytes(ZERO_RUN))
    (root / "random.bin").write_bytes(os.urandom(300_000))
    return {"disk.img": 2 * ZERO_RUN, "all-zeros.img": ZERO_RUN, "random.bin": 0}


def restore_into(repo: Repository, target: Path, sparse: bool | None = None) -> MemoryRunContext:
    options: dict[str, object] = {"path": str(target)}
    if sparse is not None:
        options["sparse"] = sparse
    spec = FilesRestoreJob(name="r", kind="files.restore", source={"job": "job"}, target=options)
    work = FilesRestoreWork(RunInputs(spec, "restore1", SMALL, repo=repo))
    ctx = MemoryRunContext(run_id="restore1")
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


@pytest.mark.parametrize("fixed_chunks", [False, True], ids=["content-defined-chunks", "fixed-chunks-of-an-older-repository"])
def test_zero_runs_restore_as_holes_and_every_file_reads_back_identical(tmp_path: Path, fixed_chunks: bool) -> None:
    zeros = disk_images(tmp_path / "source")
    repo = (
        made_before_chunking_was_recorded(tmp_path / "repo")
        if fixed_chunks
        else Repository.open(tmp_path / "repo", chunking=SCALED)
    )
    backup(repo, tmp_path / "source", "b1")
    restore_into(Repository.open(repo.root), tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(tmp_path / "source")  # content, modes, mtimes
    for name, zero_bytes in zeros.items():
        restored = tmp_path / "out" / name
        assert restored.stat().st_size == (tmp_path / "source" / name).stat().st_size
        # the zero runs (less the chunks where zeros and data meet) take no disk space
        assert allocated(restored) <= restored.stat().st_size - zero_bytes + 4 * SCALED.max_size
    with open(tmp_path / "out" / "disk.img", "rb") as fh:
        assert os.lseek(fh.fileno(), 0, os.SEEK_HOLE) < ZERO_RUN  # a hole within the first run
    assert allocated(tmp_path / "out" / "all-zeros.img") == 0  # a file that ends in a hole has its size all the same


def test_with_sparse_false_the_zeros_are_written(tmp_path: Path) -> None:
    disk_images(tmp_path / "source")
    repo = Repository.open(tmp_path / "repo", chunking=SCALED)
    backup(repo, tmp_path / "source", "b1")
    restore_into(Repository.open(repo.root), tmp_path / "out", sparse=False)
    assert snapshot_of(tmp_path / "out") == snapshot_of(tmp_path / "source")
    assert allocated(tmp_path / "out" / "all-zeros.img") >= ZERO_RUN


def test_a_zero_chunk_named_many_times_is_read_from_the_repository_once_per_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_images(tmp_path / "source")
    repo = Repository.open(tmp_path / "repo", chunking=SCALED)
    backup(repo, tmp_path / "source", "b1")
    zero_id, named = _most_named_chunk(repo)
    assert named >= 8  # the premise: the zero runs are one chunk, named again and again
    reads: collections.Counter[bytes] = collections.Counter()
    real_read_chunk = Repository.read_chunk

    def counting_read_chunk(self: Repository, chunk_id: bytes, ref: object = None) -> bytes:
        reads[chunk_id] += 1
        return real_read_chunk(self, chunk_id, ref)  # type: ignore[arg-type]

    monkeypatch.setattr(Repository, "read_chunk", counting_read_chunk)
    restore_into(Repository.open(repo.root), tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(tmp_path / "source")
    assert 1 <= reads[zero_id] <= SMALL.workers  # the readers' first reads of it may run at once


def test_a_damaged_zero_chunk_still_fails_the_restore(tmp_path: Path) -> None:
    disk_images(tmp_path / "source")
    repo = Repository.open(tmp_path / "repo", chunking=SCALED)
    backup(repo, tmp_path / "source", "b1")
    zero_id, _named = _most_named_chunk(repo)
    ref = repo.blob_ref(zero_id)
    assert ref is not None
    pack = pack_path(repo.root, ref.pack)
    raw = bytearray(pack.read_bytes())
    raw[ref.offset + ref.stored_len // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    with pytest.raises(CorruptChunk, match=zero_id.hex()):
        restore_into(Repository.open(repo.root), tmp_path / "out")


def _most_named_chunk(repo: Repository) -> tuple[bytes, int]:
    snap = repo.resolve("latest", "job")
    named = collections.Counter(chunk for entry in parsed(repo.open_tree(snap), snap.id) for chunk in entry.chunks)
    chunk, count = named.most_common(1)[0]
    return bytes.fromhex(chunk), count


def test_a_restore_from_s3_by_pack_span_makes_the_same_holes(seaweedfs_peer: S3Peer, tmp_path: Path) -> None:
    zeros = disk_images(tmp_path / "source")
    backend = S3Backend(
        seaweedfs_peer.bucket,
        f"restore-sparse/{uuid.uuid4().hex[:10]}",
        endpoint=seaweedfs_peer.endpoint,
        path_style=True,
        access_key_id=seaweedfs_peer.access_key_id,
        secret_access_key=seaweedfs_peer.secret_access_key,
    )
    repo = Repository.open(backend, local_dir=tmp_path / "home", chunking=SCALED)
    backup(repo, tmp_path / "source", "b1")
    assert _most_named_chunk(repo)[1] >= 8
    restore_into(Repository.open(backend, local_dir=tmp_path / "restore-home"), tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == snapshot_of(tmp_path / "source")
    restored = tmp_path / "out" / "disk.img"
    assert allocated(restored) <= restored.stat().st_size - zeros["disk.img"] + 4 * SCALED.max_size
    assert allocated(tmp_path / "out" / "all-zeros.img") == 0


def test_zero_chunks_of_more_lengths_than_are_remembered_are_written_as_data() -> None:
    """The shared zero buffers stay bounded: past `MAX_LENGTHS` lengths a zero chunk is handed
    out as read (written as data, the file still identical)."""
    lengths = [holes.MIN_HOLE + n for n in range(holes.MAX_LENGTHS + 3)]
    zeros = holes.ZeroChunks(lambda chunk_id: bytes(int.from_bytes(chunk_id, "big")))
    handed = [zeros.read(n.to_bytes(4, "big")) for n in lengths]
    assert all(data == bytes(n) for data, n in zip(handed, lengths, strict=True))
    assert [zeros.is_zeros(data) for data in handed] == [True] * holes.MAX_LENGTHS + [False] * 3
    assert not zeros.is_zeros(bytes(holes.MIN_HOLE))  # equal bytes, but not the shared buffer: written
    small = holes.ZeroChunks(lambda chunk_id: bytes(holes.MIN_HOLE - 1))
    assert not small.is_zeros(small.read(b"x"))  # too short to be worth a hole

"""A chunk met again while the pack holding it is being sealed (a checkpoint seals in a thread of
its own while the store goes on) is not stored a second time: found by `kill -9` of a first
backup of many small files (issue 18's adversary, `tests/e2e/test_files_walk_ahead_kills.py`),
whose checkpoints listed one chunk twice in `chunks_written`, and on main as well."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.repository.packs import PackWriter
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import FILE, read_lines
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import FilesBackupJob
from tests.fakes import MemoryRunContext

# packs of 64 KiB: a pack fills (and is handed to the sealer) every few files
TINY_PACKS = Tuning(chunk_size=64 << 10, pack_size=64 << 10, checkpoint_seconds=60, inflight_chunks=4)


def test_a_chunk_of_the_pack_being_sealed_is_not_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "s"
    source.mkdir()
    # every other file the same content: each pack sealed holds it, and the files after the
    # seal began meet it again while the seal is still under way
    for i in range(40):
        (source / f"f{i:03}").write_bytes(b"the same small file\n" if i % 2 else os.urandom(20_000))
    sealing = threading.Event()
    real_seal = PackWriter.seal

    def slow_seal(self: PackWriter) -> object:
        sealing.set()
        threading.Event().wait(0.3)  # the seal's upload and fsync, slow: the store goes on meanwhile
        return real_seal(self)

    monkeypatch.setattr(PackWriter, "seal", slow_seal)
    monkeypatch.setattr(FilesBackupWork, "SCANS_FOR_TOTAL", False)
    repo = Repository.open(tmp_path / "repo")
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    work = FilesBackupWork(RunInputs(spec, "b1", TINY_PACKS, repo=repo))
    ctx = MemoryRunContext(run_id="b1")
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    assert sealing.is_set() and len(ctx.checkpoints) >= 3
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written)), "a chunk was written twice"
    entries = [e for e in read_lines(repo.open_tree(repo.resolve("b1"))) if e.type == FILE]
    assert len(entries) == 40
    for entry in entries:  # every file still restores: its chunks are in the repository
        data = b"".join(repo.read_chunk(bytes.fromhex(c)) for c in entry.chunks)
        assert data == (source / entry.path).read_bytes()

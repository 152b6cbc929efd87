"""files.backup cuts files by the repository's recorded chunking (issue 18): small inserts into
a large file store a few chunks, not the rest of the file; the same content is cut alike in
two runs; a repository made before chunking was recorded keeps fixed chunks, its snapshots
restore, and once it records FastCDC its unchanged files keep the chunks of their fixed parent."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from davit.adapters.files import backup as backup_module
from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.files.tree import WalkedFile
from davit.adapters.repository.chunking import Chunking
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import FILE, Entry, read_lines
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from davit.domain.jobs import FilesBackupJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import restore, snapshot_of

# The 256 MiB file and 1 MiB chunks, scaled down 16 times: a 16 MiB file, 64 KiB target
SCALED = Chunking.fastcdc(64 << 10)
TUNING = Tuning(chunk_size=64 << 10, pack_size=1 << 20, checkpoint_seconds=60, inflight_chunks=8)
FILE_SIZE = 16 << 20
INSERTS = 12


def backup(repo: Repository, source: Path, run_id: str, ctx: MemoryRunContext | None = None) -> MemoryRunContext:
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    work = FilesBackupWork(RunInputs(spec, run_id, TUNING, repo=repo))
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def files_of(repo: Repository, snapshot: str) -> dict[str, Entry]:
    return {e.path: e for e in read_lines(repo.open_tree(repo.resolve(snapshot))) if e.type == FILE}


def insert_at_random_places(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for _ in range(count):
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(64)
    path.write_bytes(bytes(data))


def made_before_chunking_was_recorded(root: Path) -> Repository:
    """A repository as davit made it before issue 18: its config.json has no `chunking`."""
    Repository.open(root)
    config = json.loads((root / "config.json").read_bytes())
    del config["chunking"]
    (root / "config.json").write_text(json.dumps(config))
    return Repository.open(root)


def records_fastcdc(repo: Repository) -> Repository:
    config = json.loads((repo.root / "config.json").read_bytes())
    config["chunking"] = SCALED.to_config()
    (repo.root / "config.json").write_text(json.dumps(config))
    return Repository.open(repo.root)


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    (source / "disk.img").write_bytes(random.Random(18).randbytes(FILE_SIZE))
    return source


def test_twelve_small_inserts_into_a_large_file_store_a_few_chunks_each(tmp_path: Path, big_file: Path) -> None:
    repo = Repository.open(tmp_path / "repo", chunking=SCALED)
    first = backup(repo, big_file, "b1")
    assert len(first.chunks_written) > 150  # about 16 MiB / (32 KiB min + 64 KiB target)
    insert_at_random_places(big_file / "disk.img", INSERTS, seed=3)
    second = backup(repo, big_file, "b2")
    grown = repository_plain_bytes(repo, second.chunks_written)
    assert len(second.chunks_written) <= 3 * INSERTS, len(second.chunks_written)
    assert grown <= 3 * INSERTS * 2 * (SCALED.min_size + SCALED.avg_size), grown  # a few MiB, not most of 16
    restore(repo, tmp_path / "out", snapshot="b2")
    assert snapshot_of(tmp_path / "out") == snapshot_of(big_file)


def repository_plain_bytes(repo: Repository, chunk_ids: list[str]) -> int:
    return sum(len(repo.read_chunk(bytes.fromhex(c))) for c in chunk_ids)


def test_the_same_content_is_cut_at_the_same_places_in_two_runs(tmp_path: Path, big_file: Path) -> None:
    one = Repository.open(tmp_path / "one", chunking=SCALED)
    other = Repository.open(tmp_path / "other", chunking=SCALED)
    backup(one, big_file, "b1")
    backup(other, big_file, "b1")
    cut_one, cut_other = files_of(one, "b1")["disk.img"].chunks, files_of(other, "b1")["disk.img"].chunks
    assert cut_one == cut_other and len(cut_one) > 150
    sizes = [len(one.read_chunk(bytes.fromhex(c))) for c in cut_one]
    assert len(set(sizes)) > 10  # cut where the content says, not every N bytes


def test_a_run_resumed_inside_a_large_file_cuts_it_alike_and_stores_no_chunk_twice(tmp_path: Path, big_file: Path) -> None:
    repo = Repository.open(tmp_path / "repo", chunking=SCALED)
    ctx = MemoryRunContext(run_id="b1", stop_after_checkpoints=3)  # packs of 1 MiB seal inside the file
    with pytest.raises(RunStopped):
        backup(repo, big_file, "b1", ctx)
    assert ctx.chunks_written and not repo.snapshot_exists("b1")
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    backup(repo, big_file, "b1", ctx)
    chunks = files_of(repo, "b1")["disk.img"].chunks
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written)) == len(set(chunks))
    restore(repo, tmp_path / "out", snapshot="b1")
    assert snapshot_of(tmp_path / "out") == snapshot_of(big_file)


def test_a_repository_made_before_keeps_fixed_chunks_and_its_snapshots_restore(tmp_path: Path, big_file: Path) -> None:
    repo = made_before_chunking_was_recorded(tmp_path / "repo")
    assert repo.chunking is None
    backup(repo, big_file, "old")
    data = (big_file / "disk.img").read_bytes()
    fixed = [hashlib.sha256(data[i : i + TUNING.chunk_size]).hexdigest() for i in range(0, len(data), TUNING.chunk_size)]
    assert files_of(repo, "old")["disk.img"].chunks == fixed
    assert "chunking" not in json.loads((repo.root / "config.json").read_bytes())  # opening it wrote nothing
    restore(repo, tmp_path / "out", snapshot="old")
    assert snapshot_of(tmp_path / "out") == snapshot_of(big_file)


def test_once_fastcdc_is_recorded_unchanged_files_keep_the_fixed_chunks_of_their_parent(tmp_path: Path, big_file: Path) -> None:
    (big_file / "changed.bin").write_bytes(random.Random(5).randbytes(2 << 20))
    repo = made_before_chunking_was_recorded(tmp_path / "repo")
    backup(repo, big_file, "fixed")
    parent = files_of(repo, "fixed")
    insert_at_random_places(big_file / "changed.bin", 1, seed=9)
    repo = records_fastcdc(repo)
    after = backup(repo, big_file, "cdc")
    now = files_of(repo, "cdc")
    assert now["disk.img"].chunks == parent["disk.img"].chunks  # reused through the parent tree, not read
    assert not set(now["changed.bin"].chunks) & set(parent["changed.bin"].chunks)  # cut anew, by FastCDC
    assert set(after.chunks_written) == set(now["changed.bin"].chunks)
    restore(repo, tmp_path / "out", snapshot="cdc")
    assert snapshot_of(tmp_path / "out") == snapshot_of(big_file)


def test_an_encrypted_repository_cuts_by_its_own_key_so_chunk_lengths_tell_nothing(tmp_path: Path, big_file: Path) -> None:
    # Chunk lengths are readable in the pack indexes without the passphrase; with a public gear
    # table they would show whether a file someone knows is stored.
    lengths = []
    for name in ("one", "other"):
        repo = Repository.open(tmp_path / name, passphrase="correct horse", chunking=SCALED)
        assert json.loads((repo.root / "config.json").read_bytes())["chunking"]["keyed"] is True
        backup(repo, big_file, "b1")
        lengths.append([len(repo.read_chunk(bytes.fromhex(c))) for c in files_of(repo, "b1")["disk.img"].chunks])
        restore(repo, tmp_path / f"out-{name}", snapshot="b1")
        assert snapshot_of(tmp_path / f"out-{name}") == snapshot_of(big_file)
    plain = Repository.open(tmp_path / "plain", chunking=SCALED)
    backup(plain, big_file, "b1")
    public = [len(plain.read_chunk(bytes.fromhex(c))) for c in files_of(plain, "b1")["disk.img"].chunks]
    assert lengths[0] != lengths[1] and public not in lengths


def test_a_small_file_that_becomes_huge_between_the_walk_and_its_read_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the walk saw small is read whole, as one chunk, by a worker. Another user of the
    source can extend it (here to a 1 GiB sparse file) after the walk saw it and before the worker
    opens it: before, the worker read all of it into memory (a small file grown to any size,
    one chunk of that size: an out-of-memory kill of davitd for a `truncate -s`). Now no more
    than a chunk's maximum is read; the file is left out with a warning, as any file that
    changed since the walk (the next backup takes it)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "keep.txt").write_bytes(b"stays small")
    grows = source / "grows.log"
    grows.write_bytes(b"x" * 1000)
    real_open = backup_module.open_walked

    def extended_meanwhile(walked: WalkedFile) -> int:
        if walked.path.endswith("grows.log"):
            os.truncate(walked.path, 1 << 30)
        return real_open(walked)

    monkeypatch.setattr(backup_module, "open_walked", extended_meanwhile)
    repo = Repository.open(tmp_path / "repo", chunking=SCALED)
    ctx = backup(repo, source, "run-grown")
    stored = files_of(repo, "latest")
    assert "grows.log" not in stored and stored["keep.txt"].size == len(b"stays small")
    assert any("grows.log" in w and "grew" in w for w in ctx.warnings)

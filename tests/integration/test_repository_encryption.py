"""An encrypted repository: what an operator relies on when they set a passphrase.

Driven through the files adapter on a real directory, without a daemon (the daemon-level
scenario is in tests/e2e/test_operator_flows.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from davit.adapters.repository.crypto import RepositoryKeyError
from davit.adapters.repository.packs import decode_index, pack_path
from davit.adapters.repository.repository import Repository
from davit.domain.errors import CorruptChunk
from tests.integration.test_files_adapter import (
    assert_retention_keeps_what_remaining_snapshots_need,
    backup,
    make_tree,
    restore,
    snapshot_of,
    without_excluded,
)

PASSPHRASE = "correct horse battery staple"
MARKER = b"THE-PLAINTEXT-MARKER-7f3a"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    (root / "secret-plans.txt").write_bytes(MARKER * 2000)  # compressible: lands zstd-compressed
    (root / "secret-raw.bin").write_bytes(os.urandom(3000) + MARKER)  # incompressible: lands raw
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo", passphrase=PASSPHRASE)


def every_file_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_an_encrypted_repository_round_trips_and_stores_neither_content_nor_names_in_the_clear(
    source: Path, repo: Repository, tmp_path: Path
) -> None:
    backup(repo, source, "b1")
    restore(repo, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(source))
    stored = every_file_under(repo.root / "packs") + every_file_under(repo.root / "snapshots")
    assert MARKER not in stored
    assert b"secret-plans.txt" not in stored and b"readme.txt" not in stored
    assert b"aes-256-gcm" in (repo.root / "config.json").read_bytes()
    assert PASSPHRASE.encode() not in every_file_under(repo.root)


def test_unchanged_content_is_still_stored_once_when_encrypted(source: Path, repo: Repository) -> None:
    first = backup(repo, source, "b1")
    assert first.chunks_written
    second = backup(Repository.open(repo.root, passphrase=PASSPHRASE), source, "b2")
    assert second.chunks_written == []


def test_a_wrong_passphrase_is_refused_at_open_without_echoing_it(repo: Repository, source: Path) -> None:
    backup(repo, source, "b1")
    with pytest.raises(RepositoryKeyError, match="passphrase does not open") as refused:
        Repository.open(repo.root, passphrase="not the passphrase")
    assert "not the passphrase" not in str(refused.value)


def test_without_the_passphrase_snapshots_are_listed_but_nothing_is_read_or_written(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    backup(repo, source, "b1")
    keyless = Repository.open(repo.root)
    assert [s.id for s in keyless.snapshots("job")] == ["b1"]
    with pytest.raises(RepositoryKeyError, match="is encrypted"):
        keyless.tree_bytes(keyless.resolve("b1"))
    some_chunk = next(iter(repo._index))
    with pytest.raises(RepositoryKeyError, match="is encrypted"):
        keyless.read_chunk(some_chunk)
    with pytest.raises(RepositoryKeyError, match="is encrypted"):
        backup(keyless, source, "b2")
    assert [s.id for s in Repository.open(repo.root, passphrase=PASSPHRASE).snapshots("job")] == ["b1"]


def test_a_passphrase_given_for_an_unencrypted_repository_is_refused(tmp_path: Path) -> None:
    Repository.open(tmp_path / "plain")
    with pytest.raises(RepositoryKeyError, match="created without encryption"):
        Repository.open(tmp_path / "plain", passphrase=PASSPHRASE)


def test_a_tampered_sealed_chunk_is_detected_before_any_byte_reaches_the_target(
    source: Path, repo: Repository, tmp_path: Path
) -> None:
    (source / "only.bin").write_bytes(os.urandom(50_000))
    backup(repo, source, "b1")
    for idx in (repo.root / "index").glob("*.idx"):
        for _cid, ref in decode_index(idx.stem, idx.read_bytes(), idx):
            with open(pack_path(repo.root, ref.pack), "r+b") as fh:  # one flipped bit in every blob
                fh.seek(ref.offset + ref.stored_len // 2)
                byte = fh.read(1)
                fh.seek(ref.offset + ref.stored_len // 2)
                fh.write(bytes([byte[0] ^ 0x01]))
    target = tmp_path / "out"
    with pytest.raises(CorruptChunk, match="does not open"):
        restore(Repository.open(repo.root, passphrase=PASSPHRASE), target)
    assert not (target / "only.bin").exists() or (target / "only.bin").stat().st_size == 0


def test_a_sealed_tree_swapped_between_snapshots_does_not_open(source: Path, repo: Repository) -> None:
    backup(repo, source, "b1")
    (source / "new.txt").write_text("more")
    backup(repo, source, "b2")
    first, second = repo.root / "snapshots" / "b1", repo.root / "snapshots" / "b2"
    (second / "tree.jsonl.zst").write_bytes((first / "tree.jsonl.zst").read_bytes())
    manifest = (second / "manifest.json").read_text()
    old_sum = json.loads(manifest)["tree_sha256"]
    new_sum = json.loads((first / "manifest.json").read_text())["tree_sha256"]
    listed = repo.resolve("b2")
    with pytest.raises(CorruptChunk, match="does not match its manifest"):
        repo.tree_bytes(listed)
    # pointing the manifest at the swapped tree breaks the manifest's own MAC
    (second / "manifest.json").write_text(manifest.replace(old_sum, new_sum))
    with pytest.raises(CorruptChunk, match="manifest is not authenticated"):
        repo.tree_bytes(listed)
    assert [d.id for d in repo.damaged_snapshots()] == ["b2"]


def test_pruning_an_encrypted_repository_keeps_every_remaining_snapshot_restorable(tmp_path: Path, repo: Repository) -> None:
    assert_retention_keeps_what_remaining_snapshots_need(
        repo, tmp_path, lambda: Repository.open(repo.root, passphrase=PASSPHRASE)
    )


def test_changing_the_passphrase_rewrites_only_the_sealed_key(repo: Repository, source: Path, tmp_path: Path) -> None:
    backup(repo, source, "b1")
    packs_before = {p: p.stat().st_mtime_ns for p in (repo.root / "packs").rglob("*.pack")}
    Repository.change_passphrase(repo.root, PASSPHRASE, "a new passphrase")
    with pytest.raises(RepositoryKeyError, match="passphrase does not open"):
        Repository.open(repo.root, passphrase=PASSPHRASE)
    reopened = Repository.open(repo.root, passphrase="a new passphrase")
    restore(reopened, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(source))
    assert {p: p.stat().st_mtime_ns for p in (repo.root / "packs").rglob("*.pack")} == packs_before
    assert backup(reopened, source, "b2").chunks_written == []  # same key: same chunk ids
    with pytest.raises(RepositoryKeyError, match="passphrase does not open"):
        Repository.change_passphrase(repo.root, PASSPHRASE, "whatever")

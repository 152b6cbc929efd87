"""Snapshot manifests that cannot be trusted: malformed ones (issue 14, finding 8) and, in an
encrypted repository, edited ones (finding 10). Real repositories on disk, driven without a daemon.

A damaged manifest is listed by `damaged_snapshots` with the reason and is invisible to
everything else: `latest`, a backup's parent, `resolve`, retention (which must not delete it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention
from davit.adapters.runwork import RunInputs
from davit.domain.errors import CorruptChunk, SnapshotNotFound
from davit.domain.jobs import FilesBackupJob, Retention
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, backup

PASSPHRASE = "manifests are authenticated too"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n" * 200)
    (root / "b.bin").write_bytes(os.urandom(50_000))
    return root


def manifest_of(repo: Repository, snapshot_id: str) -> Path:
    return repo.root / "snapshots" / snapshot_id / "manifest.json"


def edit_manifest(repo: Repository, snapshot_id: str, **changes: object) -> None:
    path = manifest_of(repo, snapshot_id)
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


def _not_json(repo: Repository, sid: str) -> None:
    manifest_of(repo, sid).write_text('{"id": "b3", "job": ')


def _binary(repo: Repository, sid: str) -> None:
    manifest_of(repo, sid).write_bytes(b"\xff\xfe\x00garbage")


def _an_array(repo: Repository, sid: str) -> None:
    manifest_of(repo, sid).write_text("[1, 2, 3]")


def _no_job(repo: Repository, sid: str) -> None:
    edit_manifest(repo, sid, job=None)


def _created_at_a_number(repo: Repository, sid: str) -> None:
    edit_manifest(repo, sid, created_at=12345)


def _created_at_not_a_time(repo: Repository, sid: str) -> None:
    edit_manifest(repo, sid, created_at="9999-tomorrow")


def _stats_a_list(repo: Repository, sid: str) -> None:
    edit_manifest(repo, sid, stats=[1])


def _id_of_another_snapshot(repo: Repository, sid: str) -> None:
    edit_manifest(repo, sid, id="b1")


def _a_symlink(repo: Repository, sid: str) -> None:
    path = manifest_of(repo, sid)
    path.unlink()
    path.symlink_to(manifest_of(repo, "b1"))


def _a_directory(repo: Repository, sid: str) -> None:
    path = manifest_of(repo, sid)
    path.unlink()
    path.mkdir()


DAMAGES: dict[str, tuple[Callable[[Repository, str], None], str]] = {
    "not JSON": (_not_json, "not JSON"),
    "not UTF-8": (_binary, "not JSON"),
    "a JSON array": (_an_array, "not an object"),
    "no job": (_no_job, "has no 'job'"),
    "created_at a number": (_created_at_a_number, "'created_at' is not a string"),
    "created_at not a time": (_created_at_not_a_time, "not an ISO 8601 time"),
    "stats a list": (_stats_a_list, "'stats' is not an object"),
    "the id of another snapshot": (_id_of_another_snapshot, "not the name of its directory"),
    "a symlink": (_a_symlink, "symbolic link"),
    "a directory": (_a_directory, "not a regular file"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_one_malformed_manifest_is_listed_as_damaged_and_the_rest_of_the_repository_works(
    damage: str, source: Path, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    for sid in ("b1", "b2", "b3"):
        backup(repo, source, sid)
    make_damage, reason = DAMAGES[damage]
    make_damage(repo, "b3")  # the newest: `latest` and a new backup's parent would be it

    assert [s.id for s in repo.snapshots("job")] == ["b1", "b2"]
    [damaged] = repo.damaged_snapshots()
    assert damaged.id == "b3" and reason in damaged.reason
    assert repo.resolve("latest", "job").id == "b2"
    with pytest.raises(SnapshotNotFound):
        repo.resolve("b3")

    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    details = FilesBackupWork(RunInputs(spec, "b4", SMALL, repo=repo)).prepare(MemoryRunContext(run_id="b4"))
    assert details["parent"] == "b2"

    result = apply_retention(repo, "job", Retention(keep_last=1))
    assert result["forgotten"] == ["b1"]
    assert (repo.root / "snapshots" / "b3").is_dir()  # retention never deletes what it cannot read
    assert [d.id for d in repo.damaged_snapshots()] == ["b3"]


def test_reading_the_tree_of_a_snapshot_whose_manifest_broke_after_listing_fails_naming_the_reason(
    source: Path, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    info = repo.resolve("b1")
    _not_json(repo, "b1")
    with pytest.raises(CorruptChunk, match="manifest is not JSON"):
        repo.open_tree(info)


def test_an_edited_manifest_of_an_encrypted_repository_no_longer_redirects_latest(source: Path, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE)
    backup(repo, source, "b1")
    backup(repo, source, "b2")
    assert repo.resolve("latest", "job").id == "b2"
    assert all(s.authenticated for s in repo.snapshots())

    edit_manifest(repo, "b1", created_at="2999-01-01T00:00:00+00:00")  # would make b1 `latest`
    assert repo.resolve("latest", "job").id == "b2"
    [damaged] = repo.damaged_snapshots()
    assert damaged.id == "b1" and "not authenticated" in damaged.reason and "does not verify" in damaged.reason

    edit_manifest(repo, "b2", job="other")  # would move b2 to another job's history
    with pytest.raises(SnapshotNotFound):
        repo.resolve("latest", "other")
    with pytest.raises(SnapshotNotFound):
        repo.resolve("latest", "job")

    # without the passphrase (listing only) nothing can be authenticated, and the listing says so
    listing = Repository.open(repo.root)
    assert {s.id: s.authenticated for s in listing.snapshots()} == {"b1": None, "b2": None}


@pytest.mark.parametrize("field", ["job", "kind", "created_at", "parent", "source", "stats", "tree_sha256", "id"])
def test_every_field_of_an_encrypted_manifest_is_covered_by_its_mac(field: str, source: Path, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE)
    backup(repo, source, "b1")
    backup(repo, source, "b2")
    changed = {
        "job": "job2",
        "kind": "mongo",
        "created_at": "2001-01-01T00:00:00+00:00",
        "parent": "b0",
        "source": {"path": "/elsewhere"},
        "stats": {"files": 1},
        "tree_sha256": "0" * 64,
        "id": "b2",
    }
    if field == "id":
        # a manifest copied whole into another snapshot's directory: its MAC is bound to its own id
        manifest_of(repo, "b1").write_bytes(manifest_of(repo, "b2").read_bytes())
        edit_manifest(repo, "b1", id="b1")
    else:
        edit_manifest(repo, "b1", **{field: changed[field]})
    assert [s.id for s in repo.snapshots()] == ["b2"]
    assert [d.id for d in repo.damaged_snapshots()] == ["b1"]


def test_a_manifest_without_its_mac_is_not_trusted_in_an_encrypted_repository(source: Path, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE)
    backup(repo, source, "b1")
    edit_manifest(repo, "b1", mac=None)
    [damaged] = repo.damaged_snapshots()
    assert "has no MAC" in damaged.reason
    assert repo.snapshots() == []


def test_a_prune_keeps_the_chunks_a_damaged_snapshots_tree_still_names(source: Path, tmp_path: Path) -> None:
    """A damaged manifest hides its snapshot from restores, not its data from an operator who
    mends the manifest: pruning keeps what the tree still names."""
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    (source / "b.bin").write_bytes(os.urandom(50_000))  # content only b2 holds
    backup(repo, source, "b2")
    (source / "b.bin").write_bytes(os.urandom(50_000))
    backup(repo, source, "b3")
    _not_json(repo, "b2")
    [damaged] = repo.damaged_snapshots()
    with repo.open_damaged_tree(damaged) as lines:
        named = [bytes.fromhex(c) for line in lines if line.strip() for c in json.loads(line).get("c", [])]
    assert named

    result = apply_retention(repo, "job", Retention(keep_last=1))
    assert result["forgotten"] == ["b1"] and result["packs_deleted"] + result["packs_rewritten"] > 0

    for chunk in named:
        repo.read_chunk(chunk)  # raises CorruptChunk if its pack went

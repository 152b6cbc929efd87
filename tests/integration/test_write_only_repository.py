"""Ransomware-resistant writing (issue 17): a davitd whose credential may create objects but not
delete or replace them still backs up; its retention step says it was skipped instead of
failing the run, and a maintenance credential prunes later. Here the server is a
`MemoryBackend` whose deletes (and overwrites) are refused, as a bucket policy or an sftp-server
`-P` would; the real servers are in `test_write_only_peers.py`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.repository.backend import Caps
from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.check import check_repository
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention, prune_repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import BackendDenied, DeletesDenied
from davit.domain.jobs import FilesBackupJob, Retention
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, make_tree

PASSPHRASE = "correct horse battery staple"
SKIPPED = (
    "retention skipped: repository offsite allows no delete; run `davit repository prune offsite` with a maintenance credential"
)


class RecordingContext(MemoryRunContext):
    """Also keeps each step's summary, as the run's events would."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id=run_id)
        self.summaries: dict[str, dict[str, Any]] = {}

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        super().step_completed(step, summary)
        self.summaries[step] = summary


def backup_with_retention(repo: Repository, source: Path, run_id: str) -> RecordingContext:
    spec = FilesBackupJob(
        name="home", kind="files.backup", repository="offsite", source={"path": str(source)}, retention=Retention(keep_last=1)
    )
    work = FilesBackupWork(RunInputs(spec, run_id, SMALL, repo=repo))
    ctx = RecordingContext(run_id)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    return root


def backup_only_server() -> MemoryBackend:
    """A server that refuses this credential's deletes and overwrites; whether it may delete is
    not known beforehand (as over SFTP)."""
    server = MemoryBackend("sftp://backup@vault:22/srv/davit", caps=Caps(conditional_create=True, can_delete=None))
    server.deny("delete", "put", reason="Permission denied")
    return server


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_a_backup_only_credential_backs_up_twice_and_retention_is_skipped_with_the_command_to_run(
    tmp_path: Path, source: Path, passphrase: str | None
) -> None:
    server = backup_only_server()
    repo = Repository.open(server, passphrase=passphrase, local_dir=tmp_path / "home")
    first = backup_with_retention(repo, source, "run1")
    (source / "new.bin").write_bytes(os.urandom(300_000))
    second = backup_with_retention(repo, source, "run2")

    assert [s.id for s in repo.snapshots("home")] == ["run1", "run2"]  # the policy would keep one
    for ctx in (first, second):
        assert ctx.summaries["retention"] == {"skipped": SKIPPED}
        assert [w for w in ctx.warnings if w.startswith(SKIPPED)] == [ctx.warnings[-1]]
        assert "may not delete" in ctx.warnings[-1]
    assert server.counts.total("put") == 0  # nothing was ever overwritten
    # the first run's staging, removed under the lock held through its publish, found it out
    # for the locks (none asked to delete); one probe for retention; no exclusive lock was
    # taken for a retention that could not run
    assert server.counts.total("delete", "staging/") == 1
    assert server.counts.total("delete", "tmp/") == 1
    assert server.counts.total("delete") == 2
    locks = [json.loads(server.get(o.key)) for o in server.list("locks/") if o.key.endswith(".json")]
    assert locks and not [lock for lock in locks if lock["exclusive"]]


def test_a_repository_declared_backup_only_never_asks_the_server_to_delete(tmp_path: Path, source: Path) -> None:
    server = backup_only_server()
    server.caps = Caps(conditional_create=True, can_delete=False)  # `delete = false` in its section
    repo = Repository.open(server, local_dir=tmp_path / "home")
    ctx = backup_with_retention(repo, source, "run1")
    assert ctx.summaries["retention"] == {"skipped": SKIPPED}
    assert server.counts.total("delete") == 0  # not even for its locks: released markers instead
    assert [o.key for o in server.list("locks/") if o.key.endswith(".released")]


def test_a_delete_refused_midway_stops_retention_cleanly_and_the_run_still_succeeds(tmp_path: Path, source: Path) -> None:
    """A policy the probe cannot see (deletes allowed under tmp/ only, say): the first refused
    delete ends the retention step as skipped; what stays is a consistent repository."""
    server = MemoryBackend("s3://vault/davit", caps=Caps(conditional_create=True, can_delete=True))
    repo = Repository.open(server, local_dir=tmp_path / "home")
    backup_with_retention(repo, source, "run1")
    server.deny("delete")
    ctx = backup_with_retention(repo, source, "run2")
    assert ctx.summaries["retention"]["skipped"] == SKIPPED
    assert [s.id for s in repo.snapshots("home")] == ["run1", "run2"]
    with pytest.raises(DeletesDenied, match=r"s3://vault/davit: delete refused: this credential may not delete"):
        apply_retention(repo, "home", Retention(keep_last=1))
    assert check_repository(repo, read_data=True).ok


def test_the_maintenance_prune_is_refused_with_the_backup_credential_and_works_with_one_that_may_delete(
    tmp_path: Path, source: Path
) -> None:
    server = backup_only_server()
    repo = Repository.open(server, passphrase=PASSPHRASE, local_dir=tmp_path / "home")
    for run in ("run1", "run2", "run3"):
        (source / "changing.bin").write_bytes(os.urandom(200_000))  # what only this run holds
        backup_with_retention(repo, source, run)
    with pytest.raises(DeletesDenied, match="prune refused: this credential may not delete objects"):
        prune_repository(repo, {"home": Retention(keep_last=1)})
    dry = prune_repository(repo, {"home": Retention(keep_last=1)}, dry_run=True, grace_seconds=0)
    assert dry["jobs"]["home"]["forgotten"] == ["run1", "run2"] and dry["packs_deleted"] >= 1
    assert len(repo.snapshots()) == 3

    server.allow("delete", "put")  # the operator's maintenance credential, on the same storage
    server.caps = Caps(conditional_create=True, can_delete=None)
    maintenance = Repository.open(server, passphrase=PASSPHRASE, local_dir=tmp_path / "operator")
    done = prune_repository(maintenance, {"home": Retention(keep_last=1)}, grace_seconds=0)
    assert done["jobs"]["home"] == {"kept": ["run3"], "forgotten": ["run1", "run2"]}
    assert done["packs_deleted"] == dry["packs_deleted"]
    assert done["tmp_removed"] >= 1  # the backup credential's probe objects
    assert [s.id for s in maintenance.snapshots()] == ["run3"]
    report = check_repository(maintenance, read_data=True)
    assert report.ok and report.chunks_read > 0
    assert not [o for o in server.list("locks/")]  # released markers of the backup credential removed


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_a_publish_retried_after_its_tree_landed_keeps_that_tree_without_overwriting(
    tmp_path: Path, passphrase: str | None
) -> None:
    """The tree is created, not replaced: a publish cut off between its tree and its manifest is
    published again over the tree it left (the same tree: an encrypted one sealed anew differs
    in its bytes only), with a credential that may not overwrite."""
    server = backup_only_server()
    repo = Repository.open(server, passphrase=passphrase, local_dir=tmp_path / "home")
    tree = zstandard.ZstdCompressor().compress(b'{"p": "f", "t": "f", "c": []}\n')
    manifest = {"id": "s0", "job": "j", "kind": "files", "created_at": "2024-01-01T00:00:00+00:00"}
    server.tear("snapshots/s0/manifest.json", times=1)  # the manifest's upload breaks off
    with pytest.raises(Exception, match="connection broke"):
        repo.publish_snapshot(manifest, tree)
    assert server.stat("snapshots/s0/tree.jsonl.zst") is not None and not repo.snapshot_exists("s0")

    published = repo.publish_snapshot(manifest, tree)
    assert published.id == "s0"
    assert repo.tree_bytes(repo.resolve("s0")) == tree
    assert server.counts.total("put") == 0


def test_a_different_tree_left_by_an_earlier_attempt_is_refused_clearly_when_it_may_not_be_replaced(tmp_path: Path) -> None:
    server = backup_only_server()
    repo = Repository.open(server, local_dir=tmp_path / "home")
    server.put_if_absent("snapshots/s0/tree.jsonl.zst", zstandard.ZstdCompressor().compress(b'{"p": "other"}\n'))
    tree = zstandard.ZstdCompressor().compress(b'{"p": "f", "t": "f", "c": []}\n')
    manifest = {"id": "s0", "job": "j", "kind": "files", "created_at": "2024-01-01T00:00:00+00:00"}
    with pytest.raises(BackendDenied, match="a different tree of this snapshot is there from an earlier attempt") as raised:
        repo.publish_snapshot(manifest, tree)
    assert "run the job again" in str(raised.value)
    assert not repo.snapshot_exists("s0")

    server.allow("put")  # a credential that may overwrite replaces it (S3 PutObject without versioning lock)
    assert repo.publish_snapshot(manifest, tree).id == "s0"
    assert repo.tree_bytes(repo.resolve("s0")) == tree

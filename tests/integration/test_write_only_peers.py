"""Ransomware-resistant writing against real servers (issue 17): a backup-only credential backs
up, its retention is skipped with the command to run, a maintenance credential prunes, and the
backup credential cannot destroy what was stored.

- S3: a private SeaweedFS with an `admin` identity and a `backup` identity whose IAM policy
  allows only s3:GetObject, s3:PutObject and s3:ListBucket.
- SFTP: a private sshd whose sftp subsystem is `internal-sftp -P remove,rmdir,posix-rename`
  (the test user is root, so file permissions deny nothing: the refused requests do;
  objects are created 0400, which stops a login that is not root from overwriting them).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.backends.s3 import S3Backend
from davit.adapters.repository.backends.sftp import SftpBackend
from davit.adapters.repository.check import check_repository
from davit.adapters.repository.packs import index_key, pack_key
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import prune_repository
from davit.domain.errors import BackendDenied, DeletesDenied
from davit.domain.jobs import Retention
from tests.integration.test_files_adapter import make_tree
from tests.integration.test_s3_backend import BACKUP_ONLY_POLICY, empty_prefix
from tests.integration.test_sftp_backend_faults import PrivateSshd, keygen
from tests.integration.test_write_only_repository import SKIPPED, backup_with_retention
from tests.peers import seaweedfs
from tests.peers.state import S3Peer, SshPeer

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def private_s3(tmp_path_factory: pytest.TempPathFactory, seaweedfs_peer: S3Peer) -> Iterator[seaweedfs.PrivateS3]:
    top = tmp_path_factory.mktemp("write-only-seaweedfs")
    with seaweedfs.private_instance(
        top, {"admin": ["Admin", "Read", "Write", "List"], "backup": []}, policies={"backup": BACKUP_ONLY_POLICY}
    ) as server:
        yield server


def s3_backend(server: seaweedfs.PrivateS3, identity: str, prefix: str) -> S3Backend:
    access, secret = server.keys[identity]
    return S3Backend(
        seaweedfs.BUCKET, prefix, endpoint=server.endpoint, path_style=True, access_key_id=access, secret_access_key=secret
    )


def changed_source(source: Path, run: str) -> None:
    (source / "changing.bin").write_bytes(os.urandom(300_000))  # what only this run holds
    (source / "run.txt").write_text(run)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    return root


def test_s3_a_backup_only_identity_backs_up_and_an_admin_prunes_what_retention_skipped(
    private_s3: seaweedfs.PrivateS3, tmp_path: Path, source: Path
) -> None:
    prefix = f"write-only/{uuid.uuid4().hex[:8]}"
    backup = s3_backend(private_s3, "backup", prefix)
    repo = Repository.open(backup, passphrase=PASSPHRASE, local_dir=tmp_path / "davitd")
    assert backup.caps.can_delete is False  # found by the probe at open
    for run in ("run1", "run2", "run3"):
        changed_source(source, run)
        ctx = backup_with_retention(repo, source, run)
        assert ctx.summaries["retention"] == {"skipped": SKIPPED}
    assert [s.id for s in repo.snapshots("home")] == ["run1", "run2", "run3"]
    with pytest.raises(DeletesDenied, match="prune refused"):
        prune_repository(repo, {"home": Retention(keep_last=1)})

    # what a ransomware run with this credential would try: the server refuses every delete
    pack = repo.index_packs()[0]
    for key in (pack_key(pack), index_key(pack), "snapshots/run1/manifest.json", "snapshots/run1/tree.jsonl.zst", "config.json"):
        with pytest.raises(BackendDenied, match="AccessDenied"):
            backup.delete(key)
        assert backup.stat(key) is not None
    assert check_repository(repo, read_data=True).ok

    admin = s3_backend(private_s3, "admin", prefix)
    maintenance = Repository.open(admin, passphrase=PASSPHRASE, local_dir=tmp_path / "operator")
    assert admin.caps.can_delete is True
    planned = prune_repository(maintenance, {"home": Retention(keep_last=1)}, dry_run=True)
    done = prune_repository(maintenance, {"home": Retention(keep_last=1)}, grace_seconds=0)
    assert done["jobs"]["home"] == {"kept": ["run3"], "forgotten": ["run1", "run2"]} == planned["jobs"]["home"]
    assert done["packs_deleted"] == planned["packs_deleted"] >= 1
    assert done["tmp_removed"] >= 1  # the backup identity's probe objects
    assert [s.id for s in maintenance.snapshots()] == ["run3"]
    report = check_repository(maintenance, read_data=True)
    assert report.ok and report.snapshots == 1 and report.chunks_read > 0
    # and the backup identity goes on backing up into the pruned repository
    changed_source(source, "run4")
    again = Repository.open(s3_backend(private_s3, "backup", prefix), passphrase=PASSPHRASE, local_dir=tmp_path / "davitd")
    assert backup_with_retention(again, source, "run4").summaries["retention"] == {"skipped": SKIPPED}
    assert check_repository(maintenance, read_data=True).ok
    empty_prefix(admin)


@pytest.fixture
def restricted_sshd(ssh_peer: SshPeer, tmp_path: Path) -> Iterator[tuple[PrivateSshd, Path]]:
    """A private sshd whose sftp-server refuses remove, rmdir, posix-rename and setstat (and the client
    key to log in with)."""
    key = keygen(tmp_path / "id_client", "davit-write-only")
    d = tmp_path / "sshd"
    d.mkdir()
    server = PrivateSshd(d, key)
    text = server.config.read_text()
    assert "Subsystem sftp internal-sftp\n" in text
    restricted = "Subsystem sftp internal-sftp -P remove,rmdir,posix-rename,setstat,fsetstat,lsetstat\n"
    server.config.write_text(text.replace("Subsystem sftp internal-sftp\n", restricted))
    server.start()
    yield server, key
    server.stop()


def test_sftp_a_server_that_refuses_remove_and_rename_over_still_takes_backups_and_refuses_prune(
    restricted_sshd: tuple[PrivateSshd, Path], tmp_path: Path, source: Path
) -> None:
    server, key = restricted_sshd
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir(mode=0o700)
    backend = SftpBackend(
        f"sftp://root@127.0.0.1:{server.port}{repo_dir}", known_hosts=server.known_hosts, identity_file=key, retry_budget=20
    )
    try:
        repo = Repository.open(backend, local_dir=tmp_path / "davitd")
        for run in ("run1", "run2"):
            changed_source(source, run)
            ctx = backup_with_retention(repo, source, run)
            assert ctx.summaries["retention"] == {"skipped": SKIPPED}
        assert backend.caps.can_delete is False
        with pytest.raises(DeletesDenied, match=r"prune refused: this credential may not delete objects"):
            prune_repository(repo, {"home": Retention(keep_last=1)})
        for key_ in ("snapshots/run1/manifest.json", pack_key(repo.index_packs()[0])):
            with pytest.raises(BackendDenied, match=r"delete .* refused"):
                backend.delete(key_)
            with pytest.raises(BackendDenied, match=r"put .* refused"):
                backend.put(key_, b"ransom note")  # a replace is a posix-rename: refused too
        assert [s.id for s in repo.snapshots("home")] == ["run1", "run2"]
        # every object is read-only: a login that is not root cannot reopen one to overwrite it
        assert {oct(p.stat().st_mode & 0o777) for p in repo_dir.rglob("*") if p.is_file()} == {"0o400"}
    finally:
        backend.close()
    # the same directory, read as a local repository: both snapshots whole
    local = Repository.open(LocalBackend(repo_dir), create=False)
    report = check_repository(local, read_data=True)
    assert report.ok and report.snapshots == 2

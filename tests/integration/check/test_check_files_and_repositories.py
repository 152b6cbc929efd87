"""`davit check` on files jobs and on each repository backend: local (plain and encrypted),
SFTP and S3 on the real peers, with good and with wrong credentials. A check changes nothing:
the repository's files (and, for SFTP, the server's directory) are listed with their checksums
before and after."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest

from davit.daemon.config import load_settings
from davit.daemon.jobs import JobRegistry
from davit.eventstore.sqlite import SqliteEventStore
from tests.integration.check.helpers import check, davit, job_file, listing, make_home
from tests.integration.test_remote_repositories_by_name import s3_section, sftp_section
from tests.peers.state import S3Peer, SshPeer

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("hello\n")
    return src


def files_backup(tmp_path: Path, source: Path, repository: str = "local") -> Path:
    body = f'kind = "files.backup"\nrepository = "{repository}"\n[source]\npath = "{source}"\n'
    return job_file(tmp_path / "jobs", "docs", body)


def test_a_files_backup_into_a_local_repository_passes_every_check_and_changes_nothing(tmp_path: Path, source: Path) -> None:
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(home, "repository", "init", "local")[0] == 0
    before = listing(tmp_path / "repo"), listing(source)
    out = check(home, files_backup(tmp_path, source))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    for what in ("configured", "opens", "config", "key", "snapshots", "writable", "free space"):
        assert out.verdict("repository local", what) in ("ok", "warn")
    assert str(source) in out.detail("source", "readable")
    assert (listing(tmp_path / "repo"), listing(source)) == before


def test_a_missing_source_fails_naming_its_path(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    davit(home, "repository", "init", "local")
    out = check(home, files_backup(tmp_path, tmp_path / "gone"))
    assert out.exit_code == 1
    assert out.failed() == [("source", "readable")]
    assert str(tmp_path / "gone") in out.detail("source", "readable")


def test_a_repository_that_was_never_created_fails_and_is_not_created(tmp_path: Path, source: Path) -> None:
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    out = check(home, files_backup(tmp_path, source))
    assert out.exit_code == 1 and out.verdict("repository local", "config") == "FAIL"
    assert "davit repository init" in out.detail("repository local", "config")
    assert not (tmp_path / "repo").exists()


def test_an_encrypted_repository_opens_with_its_passphrase_and_fails_with_a_wrong_one(tmp_path: Path, source: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o600)
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"\npassphrase_file = "{secret}"'})
    assert davit(home, "repository", "init", "local", "--passphrase-file", str(secret))[0] == 0
    job = files_backup(tmp_path, source)
    good = check(home, job)
    assert good.exit_code == 0 and good.verdict("repository local", "key") == "ok"

    secret.write_text("a wrong passphrase")
    before = listing(tmp_path / "repo")
    bad = check(home, job)
    assert bad.exit_code == 1 and bad.failed() == [("repository local", "key")]
    assert "a wrong passphrase" not in bad.text and PASSPHRASE not in bad.text
    assert listing(tmp_path / "repo") == before


def test_a_files_restore_fails_when_its_snapshot_is_not_in_the_repository(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    davit(home, "repository", "init", "local")
    job = job_file(
        tmp_path / "jobs", "back", f'kind = "files.restore"\n[source]\njob = "docs"\n[target]\npath = "{tmp_path / "out"}"\n'
    )
    out = check(home, job)
    assert out.exit_code == 1 and ("repository local", "snapshot") in out.failed()
    assert out.verdict("target", "writable") == "ok"  # may be made under tmp_path
    assert not (tmp_path / "out").exists()


def test_an_sftp_repository_passes_with_its_host_key_and_fails_with_another(
    ssh_peer: SshPeer, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, source: Path
) -> None:
    directory = tmp_path_factory.mktemp("sftp-check") / "repo"
    directory.mkdir(mode=0o700)
    home = make_home(tmp_path / "home", {"remote": sftp_section(ssh_peer, directory)})
    assert davit(home, "repository", "init", "remote")[0] == 0
    job = files_backup(tmp_path, source, "remote")
    before = listing(directory)
    good = check(home, job)
    assert good.exit_code == 0, good.lines
    assert listing(directory) == before

    # the same host named with a key it does not have: refused, never accepted
    wrong = tmp_path / "known_hosts"
    line = Path(ssh_peer.known_hosts).read_text().splitlines()[0].split()
    wrong.write_text(f"{line[0]} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    home2 = make_home(tmp_path / "home2", {"remote": sftp_section(ssh_peer, directory).replace(ssh_peer.known_hosts, str(wrong))})
    bad = check(home2, job)
    assert bad.exit_code == 1
    assert bad.failed()[0][0] == "repository remote"
    assert wrong.read_text().count("\n") == 1  # nothing was added to known_hosts


def test_an_s3_repository_passes_with_its_keys_and_fails_with_a_wrong_secret_key(
    seaweedfs_peer: S3Peer, tmp_path: Path, source: Path
) -> None:
    url = f"s3://{seaweedfs_peer.bucket}/check/{uuid.uuid4().hex[:10]}"
    home = make_home(tmp_path / "home", {"cloud": s3_section(seaweedfs_peer, url)})
    assert davit(home, "repository", "init", "cloud")[0] == 0
    job = files_backup(tmp_path, source, "cloud")
    good = check(home, job)
    assert good.exit_code == 0, good.lines

    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret-key-0123456789")
    wrong.chmod(0o600)
    section = s3_section(seaweedfs_peer, url).replace(seaweedfs_peer.secret_access_key_file, str(wrong))
    bad = check(make_home(tmp_path / "home2", {"cloud": section}), job)
    assert bad.exit_code == 1 and bad.failed()[0][0] == "repository cloud", bad.lines
    assert "not-the-secret-key" not in bad.text and seaweedfs_peer.secret_access_key not in bad.text


def test_check_all_checks_every_job_davitd_has_and_fails_if_one_fails(tmp_path: Path, source: Path) -> None:
    """`--all` takes the jobs from the log, as davitd defined them from its jobs directory; an
    unknown name is a usage error."""
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    davit(home, "repository", "init", "local")
    settings = load_settings(home=home)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    for name, path in (("good", source), ("bad", tmp_path / "gone")):
        job_file(settings.jobs_dir, name, f'kind = "files.backup"\n[source]\npath = "{path}"\n')

    async def define() -> None:
        store = await SqliteEventStore(settings.db_path).open(create=True)
        try:
            await JobRegistry(store).sync_directory(settings.jobs_dir)
        finally:
            await store.close()

    anyio.run(define)
    code, out = davit(home, "check", "--all", "--json")
    verdicts = {(line["job"], line["subject"], line["verdict"]) for line in map(json.loads, out.splitlines())}
    assert code == 1
    assert ("good", "source", "ok") in verdicts and ("bad", "source", "FAIL") in verdicts
    assert davit(home, "check", "good")[0] == 0
    assert davit(home, "check", "nosuchjob")[0] == 2

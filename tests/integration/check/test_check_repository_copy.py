"""`davit check` on repository.copy between two local repositories: both open with their
passphrases and pass, writing nothing to either; a target never created, a wrong passphrase
on the target and a `snapshot` the source does not hold each fail, naming what."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.check.helpers import check, davit, job_file, listing, make_home
from tests.integration.test_files_adapter import backup as files_backup

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def passphrase(tmp_path: Path) -> Path:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o600)
    return secret


@pytest.fixture
def home(tmp_path: Path, passphrase: Path) -> Path:
    """`main` (plain, holding one files snapshot of job docs) and `offsite` (encrypted)."""
    h = make_home(
        tmp_path / "home",
        {
            "main": f'path = "{tmp_path / "main"}"',
            "offsite": f'path = "{tmp_path / "offsite"}"\npassphrase_file = "{passphrase}"',
        },
    )
    assert davit(h, "repository", "init", "main")[0] == 0
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    files_backup(Repository.open(tmp_path / "main"), src, "f1", name="docs")
    return h


def copy_job(tmp_path: Path, more: str = "") -> Path:
    body = f'kind = "repository.copy"\nsource_repository = "main"\nrepository = "offsite"\n{more}'
    return job_file(tmp_path / "jobs", "tooffsite", body)


def init_offsite(home: Path, passphrase: Path) -> None:
    assert davit(home, "repository", "init", "offsite", "--passphrase-file", str(passphrase))[0] == 0


def test_a_copy_between_two_local_repositories_passes_and_writes_to_neither(tmp_path: Path, home: Path, passphrase: Path) -> None:
    init_offsite(home, passphrase)
    before = listing(tmp_path / "main"), listing(tmp_path / "offsite")
    out = check(home, copy_job(tmp_path))
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.detail("source main", "snapshots") == "1 readable"
    assert out.verdict("target offsite", "key") == "ok"
    assert (listing(tmp_path / "main"), listing(tmp_path / "offsite")) == before
    assert PASSPHRASE not in out.text


def test_a_copy_into_a_repository_never_created_fails_and_does_not_create_it(tmp_path: Path, home: Path) -> None:
    out = check(home, copy_job(tmp_path))
    assert out.exit_code == 1 and out.failed() == [("target offsite", "config")], out.lines
    assert "davit repository init" in out.detail("target offsite", "config")
    assert not (tmp_path / "offsite").exists()


def test_a_copy_whose_target_passphrase_is_wrong_fails_at_its_key(tmp_path: Path, home: Path, passphrase: Path) -> None:
    init_offsite(home, passphrase)
    passphrase.write_text("a wrong passphrase")
    before = listing(tmp_path / "offsite")
    out = check(home, copy_job(tmp_path))
    assert out.exit_code == 1 and out.failed() == [("target offsite", "key")], out.lines
    assert "a wrong passphrase" not in out.text and PASSPHRASE not in out.text
    assert listing(tmp_path / "offsite") == before


def test_a_copy_of_one_snapshot_the_source_does_not_hold_fails_naming_it(tmp_path: Path, home: Path, passphrase: Path) -> None:
    """A defect: `snapshot` was not looked up; the run then failed at resolving it."""
    init_offsite(home, passphrase)
    out = check(home, copy_job(tmp_path, 'snapshot = "deadbeef"\n'))
    assert out.exit_code == 1 and out.failed() == [("source main", "snapshot")], out.lines
    assert "deadbeef" in out.detail("source main", "snapshot")
    held = Repository.open(tmp_path / "main").snapshots()[0].id
    good = check(home, copy_job(tmp_path, f'snapshot = "{held[:12]}"\n'))
    assert good.exit_code == 0 and good.verdict("source main", "snapshot") == "ok", good.lines

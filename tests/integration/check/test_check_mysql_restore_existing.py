"""`davit check` on a mysql.restore whose target database exists already (MariaDB peer, from a
snapshot really backed up): with `if_exists = "fail"` the run would fail, so the check warns,
naming the database (read from the snapshot's tree, as the run reads it, through `rename`),
in a plain and in an encrypted repository; a new name, or `merge`, is no warning. The check
writes nothing to the repository and creates no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.mysql.backup import MysqlBackupWork
from davit.adapters.mysql.restore import MysqlRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.check.helpers import check, davit, listing, make_home
from tests.integration.check.test_check_databases import maria_db, secret_file
from tests.integration.check.test_check_sql_restores import maria_databases, maria_restore
from tests.peers.state import MariadbPeer

__all__ = ["maria_db"]  # fixture
PASSPHRASE = "a passphrase for the check's tree"


@pytest.fixture(params=["plain", "encrypted"])
def passphrase(request: pytest.FixtureRequest) -> str | None:
    return PASSPHRASE if request.param == "encrypted" else None


@pytest.fixture
def home(tmp_path: Path, passphrase: str | None) -> Path:
    section = f'path = "{tmp_path / "repo"}"'
    if passphrase is not None:
        section += f'\npassphrase_file = "{secret_file(tmp_path, "passphrase", passphrase)}"'
    h = make_home(tmp_path / "home", {"local": section})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


@pytest.fixture
def maria_snapshot(home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_db: str, passphrase: str | None) -> str:
    """Database `maria_db` backed up as job `db` into the home's repository, as a run would."""
    p = mariadb_peer
    source = {"host": p.host, "port": p.port, "user": p.user, "password_file": p.password_file, "databases": [maria_db]}
    spec = job_from_dict({"name": "db", "kind": "mysql.backup", "source": source}, "db.toml")
    repo = Repository.open(tmp_path / "repo", passphrase=passphrase, create=False)
    ctx = MemoryRunContext(run_id="b1")
    work = MysqlBackupWork(RunInputs(spec, "b1", repo=repo))  # type: ignore[arg-type]
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return maria_db


def ours(peer: MariadbPeer, name: str) -> set[str]:
    """This test's databases on the server (others' tests make and drop theirs meanwhile)."""
    return {d for d in maria_databases(peer) if d.startswith(name)}


def test_a_restore_onto_a_database_that_exists_warns_that_if_exists_fail_would_fail(
    home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_snapshot: str, passphrase: str | None
) -> None:
    before = listing(tmp_path / "repo"), ours(mariadb_peer, maria_snapshot)
    out = check(home, maria_restore(tmp_path, mariadb_peer, Path(mariadb_peer.password_file)))
    assert out.exit_code == 0 and out.failed() == [], out.lines  # a warning passes
    assert out.verdict("target", "databases") == "warn"
    detail = out.detail("target", "databases")
    assert maria_snapshot in detail and "if_exists = 'fail'" in detail
    assert (listing(tmp_path / "repo"), ours(mariadb_peer, maria_snapshot)) == before
    # the run refuses it indeed, naming the same database
    spec = job_from_dict(
        {
            "name": "mariaback",
            "kind": "mysql.restore",
            "source": {"job": "db"},
            "target": {
                "host": mariadb_peer.host,
                "port": mariadb_peer.port,
                "user": mariadb_peer.user,
                "password_file": mariadb_peer.password_file,
            },
        },
        "mariaback.toml",
    )
    repo = Repository.open(tmp_path / "repo", passphrase=passphrase, create=False)
    with pytest.raises(PermanentError, match=f"{maria_snapshot} exist"):
        MysqlRestoreWork(RunInputs(spec, "r1", repo=repo)).prepare(MemoryRunContext(run_id="r1"))  # type: ignore[arg-type]


def test_a_restore_under_a_new_name_or_merging_is_no_warning(
    home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_snapshot: str
) -> None:
    renamed = check(
        home,
        maria_restore(
            tmp_path,
            mariadb_peer,
            Path(mariadb_peer.password_file),
            f'rename = {{ {maria_snapshot} = "{maria_snapshot}_new" }}\n',
        ),
    )
    assert renamed.verdict("target", "databases") == "ok" and f"{maria_snapshot}_new" in renamed.detail("target", "databases")
    merged = check(home, maria_restore(tmp_path, mariadb_peer, Path(mariadb_peer.password_file), 'if_exists = "merge"\n'))
    assert merged.exit_code == 0 and not [r for r in merged.lines if r["check"] == "databases"], merged.lines

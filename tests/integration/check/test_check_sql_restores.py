"""`davit check` on the SQL restores (postgres.restore, mysql.restore) against the real servers,
from a snapshot really backed up into the job's repository: good and wrong credentials, a user
that may not create databases, a target database that exists under `if_exists = "fail"`, and a
snapshot of another kind (which the run refuses, so the check must too). A check creates no
database and writes nothing to the repository."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pymysql
import pytest

from davit.adapters.mysql.backup import MysqlBackupWork
from davit.adapters.postgres.backup import PostgresBackupWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.check.helpers import check, davit, job_file, listing, make_home
from tests.integration.check.test_check_databases import maria_db, pg_db, secret_file
from tests.integration.test_files_adapter import backup as files_backup
from tests.peers.state import MariadbPeer, PostgresPeer

__all__ = ["maria_db", "pg_db"]  # the fixtures, shared with the backup checks


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


def back_up(tmp_path: Path, kind: str, source: dict[str, object]) -> None:
    """Back `source` up as job `db` of `kind` into the home's repository, as a run would."""
    work_class = PostgresBackupWork if kind == "postgres.backup" else MysqlBackupWork
    spec = job_from_dict({"name": "db", "kind": kind, "source": source}, "db.toml")
    repo = Repository.open(tmp_path / "repo")
    ctx = MemoryRunContext(run_id="b1")
    work = work_class(RunInputs(spec, "b1", repo=repo))  # type: ignore[abstract]
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)


def server_lines(host: str, port: int, user: str, password_file: Path) -> str:
    return f'host = "{host}"\nport = {port}\nuser = "{user}"\npassword_file = "{password_file}"\n'


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_restore(tmp_path: Path, peer: PostgresPeer, user: str, password_file: Path, target: str, job: str = "db") -> Path:
    body = (
        f'kind = "postgres.restore"\n[source]\njob = "{job}"\n[target]\n'
        f"{server_lines(peer.host, peer.port, user, password_file)}{target}"
    )
    return job_file(tmp_path / "jobs", "pgback", body)


def pg_databases(peer: PostgresPeer) -> set[str]:
    with psycopg.connect(host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname="postgres") as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database").fetchall()}


@pytest.fixture
def pg_snapshot(tmp_path: Path, postgres_peer: PostgresPeer, pg_db: str) -> str:
    p = postgres_peer
    back_up(
        tmp_path,
        "postgres.backup",
        {"host": p.host, "port": p.port, "user": p.user, "password_file": p.password_file, "databases": [pg_db]},
    )
    return pg_db


def test_a_postgres_restore_under_a_new_name_passes_as_the_admin_and_creates_nothing(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_snapshot: str
) -> None:
    target = f'rename = {{ {pg_snapshot} = "{pg_snapshot}_back" }}\n'
    job = pg_restore(tmp_path, postgres_peer, postgres_peer.user, Path(postgres_peer.password_file), target)
    before = listing(tmp_path / "repo"), pg_databases(postgres_peer)
    out = check(home, job)
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.verdict("repository local", "snapshot") == "ok"
    assert out.verdict("target", "privileges") == "ok"
    assert f"{pg_snapshot}_back" in out.detail("target", "databases")
    assert (listing(tmp_path / "repo"), pg_databases(postgres_peer)) == before


def test_a_postgres_restore_onto_a_database_that_exists_fails_when_if_exists_is_fail(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_snapshot: str
) -> None:
    """The snapshot's database is still there (no rename): the run would stop at it."""
    target = f'databases = ["{pg_snapshot}"]\n'
    out = check(home, pg_restore(tmp_path, postgres_peer, postgres_peer.user, Path(postgres_peer.password_file), target))
    assert out.exit_code == 1 and out.failed() == [("target", "databases")], out.lines
    assert pg_snapshot in out.detail("target", "databases")


def test_a_postgres_restore_with_a_wrong_password_fails_at_connecting(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_snapshot: str
) -> None:
    wrong = secret_file(tmp_path, "pgpass", "wrong-pg-restore-password")
    out = check(home, pg_restore(tmp_path, postgres_peer, postgres_peer.user, wrong, ""))
    assert out.exit_code == 1 and out.failed() == [("target", "connects")], out.lines
    assert out.verdict("repository local", "snapshot") == "ok"
    assert "wrong-pg-restore-password" not in out.text and postgres_peer.password not in out.text


def test_a_postgres_restore_as_a_user_that_may_not_create_databases_fails_naming_createdb(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_snapshot: str
) -> None:
    ro = secret_file(tmp_path, "ro", "ro-secret-pw")  # pg_db's login role, without CREATEDB
    out = check(
        home, pg_restore(tmp_path, postgres_peer, f"{pg_snapshot}_ro", ro, f'rename = {{ {pg_snapshot} = "{pg_snapshot}_x" }}\n')
    )
    assert out.exit_code == 1 and out.failed() == [("target", "privileges")], out.lines
    assert "CREATEDB" in out.detail("target", "privileges")
    assert "ro-secret-pw" not in out.text


# --- MariaDB -----------------------------------------------------------------------------------


def maria_restore(tmp_path: Path, peer: MariadbPeer, password_file: Path, target: str = "", job: str = "db") -> Path:
    body = (
        f'kind = "mysql.restore"\n[source]\njob = "{job}"\n[target]\n'
        f"{server_lines(peer.host, peer.port, peer.user, password_file)}{target}"
    )
    return job_file(tmp_path / "jobs", "mariaback", body)


def maria_databases(peer: MariadbPeer) -> set[str]:
    conn = pymysql.connect(host=peer.host, port=peer.port, user=peer.user, password=peer.password)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES")
            return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


@pytest.fixture
def maria_snapshot(tmp_path: Path, mariadb_peer: MariadbPeer, maria_db: str) -> str:
    p = mariadb_peer
    back_up(
        tmp_path,
        "mysql.backup",
        {"host": p.host, "port": p.port, "user": p.user, "password_file": p.password_file, "databases": [maria_db]},
    )
    return maria_db


def test_a_mariadb_restore_passes_as_the_admin_and_creates_nothing(
    home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_snapshot: str
) -> None:
    job = maria_restore(
        tmp_path, mariadb_peer, Path(mariadb_peer.password_file), f'rename = {{ {maria_snapshot} = "{maria_snapshot}_back" }}\n'
    )
    before = listing(tmp_path / "repo"), maria_databases(mariadb_peer)
    out = check(home, job)
    assert out.exit_code == 0 and out.failed() == [], out.lines
    assert out.verdict("repository local", "snapshot") == "ok"
    assert out.verdict("target", "privileges") == "ok"  # the peer's admin has ALL
    assert (listing(tmp_path / "repo"), maria_databases(mariadb_peer)) == before


def test_a_mariadb_restore_with_a_wrong_password_fails_at_connecting(
    home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_snapshot: str
) -> None:
    out = check(home, maria_restore(tmp_path, mariadb_peer, secret_file(tmp_path, "pw", "wrong-maria-restore-password")))
    assert out.exit_code == 1 and out.failed() == [("target", "connects")], out.lines
    assert mariadb_peer.user in out.detail("target", "connects")
    assert "wrong-maria-restore-password" not in out.text and mariadb_peer.password not in out.text


# --- a snapshot of another kind (a defect: the check passed, the run then refused it) -----------


def test_a_sql_restore_naming_a_files_snapshot_fails_at_the_snapshot_naming_its_kind(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, mariadb_peer: MariadbPeer
) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    files_backup(Repository.open(tmp_path / "repo"), src, "f1", name="docs")
    for job in (
        pg_restore(tmp_path, postgres_peer, postgres_peer.user, Path(postgres_peer.password_file), "", job="docs"),
        maria_restore(tmp_path, mariadb_peer, Path(mariadb_peer.password_file), job="docs"),
    ):
        out = check(home, job)
        assert out.exit_code == 1 and out.failed() == [("repository local", "snapshot")], out.lines
        assert "a files snapshot" in out.detail("repository local", "snapshot")

"""`davit check` on the database kinds against the real servers (PostgreSQL, MariaDB, FerretDB
for MongoDB), with good and with wrong credentials, and with a user lacking a privilege the run
needs. The password never appears in what is printed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.peers.state import MariadbPeer, MongoPeer, PostgresPeer, load


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value)
    path.chmod(0o600)
    return path


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def pg_db(postgres_peer: PostgresPeer) -> Iterator[str]:
    """A database with one table, and a login role `<db>_ro` that may connect but not read it."""
    name = f"check_{uuid.uuid4().hex[:8]}"
    admin = dict(host=postgres_peer.host, port=postgres_peer.port, user=postgres_peer.user, password=postgres_peer.password)
    with psycopg.connect(**admin, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"CREATE ROLE {name}_ro LOGIN PASSWORD 'ro-secret-pw'")
    with psycopg.connect(**admin, dbname=name, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
    yield name
    with psycopg.connect(**admin, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        conn.execute(f"DROP ROLE {name}_ro")


def pg_job(tmp_path: Path, peer: PostgresPeer, db: str, user: str, password_file: Path) -> Path:
    body = (
        f'kind = "postgres.backup"\n[source]\nhost = "{peer.host}"\nport = {peer.port}\nuser = "{user}"\n'
        f'password_file = "{password_file}"\ndatabases = ["{db}"]\n'
    )
    return job_file(tmp_path / "jobs", "pg", body)


def test_a_postgres_backup_passes_as_the_admin(home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_db: str) -> None:
    job = pg_job(tmp_path, postgres_peer, pg_db, postgres_peer.user, Path(postgres_peer.password_file))
    out = check(home, job)
    assert out.exit_code == 0, out.lines
    assert out.verdict("source", "server version") == "ok" and "PostgreSQL" in out.detail("source", "server version")
    assert out.verdict("source", f"database {pg_db}") == "ok"


def test_a_postgres_backup_with_a_wrong_password_fails_at_connecting(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_db: str
) -> None:
    wrong = secret_file(tmp_path, "pgpass", "wrong-pg-password")
    out = check(home, pg_job(tmp_path, postgres_peer, pg_db, postgres_peer.user, wrong))
    assert out.exit_code == 1 and out.failed() == [("source", "connects")]
    assert postgres_peer.user in out.detail("source", "connects")
    assert "wrong-pg-password" not in out.text


def test_a_postgres_user_that_may_not_read_a_table_fails_naming_it(
    home: Path, tmp_path: Path, postgres_peer: PostgresPeer, pg_db: str
) -> None:
    out = check(home, pg_job(tmp_path, postgres_peer, pg_db, f"{pg_db}_ro", secret_file(tmp_path, "ro", "ro-secret-pw")))
    assert out.exit_code == 1 and out.failed() == [("source", f"database {pg_db}")]
    assert "public.t" in out.detail("source", f"database {pg_db}")
    assert "ro-secret-pw" not in out.text


# --- MariaDB -----------------------------------------------------------------------------------


@pytest.fixture
def maria_db(mariadb_peer: MariadbPeer) -> Iterator[str]:
    name = f"check_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host=mariadb_peer.host, port=mariadb_peer.port, user=mariadb_peer.user, password=mariadb_peer.password)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.t (id int)")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {name}")
    conn.close()


def maria_job(tmp_path: Path, peer: MariadbPeer, db: str, password_file: Path) -> Path:
    body = (
        f'kind = "mysql.backup"\n[source]\nhost = "{peer.host}"\nport = {peer.port}\nuser = "{peer.user}"\n'
        f'password_file = "{password_file}"\ndatabases = ["{db}"]\n'
    )
    return job_file(tmp_path / "jobs", "maria", body)


def test_a_mariadb_backup_passes_as_the_admin(home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_db: str) -> None:
    out = check(home, maria_job(tmp_path, mariadb_peer, maria_db, Path(mariadb_peer.password_file)))
    assert out.exit_code == 0, out.lines
    assert "MariaDB" in out.detail("source", "server version")
    assert out.verdict("source", "consistent start") == "ok"  # the admin has RELOAD


def test_a_mariadb_backup_with_a_wrong_password_fails_at_connecting(
    home: Path, tmp_path: Path, mariadb_peer: MariadbPeer, maria_db: str
) -> None:
    out = check(home, maria_job(tmp_path, mariadb_peer, maria_db, secret_file(tmp_path, "pw", "wrong-maria-password")))
    assert out.exit_code == 1 and out.failed() == [("source", "connects")]
    assert mariadb_peer.user in out.detail("source", "connects")
    assert "wrong-maria-password" not in out.text


# --- MongoDB (FerretDB) ------------------------------------------------------------------------


def mongo_job(tmp_path: Path, uri_file: Path) -> Path:
    return job_file(tmp_path / "jobs", "mongo", f'kind = "mongo.backup"\n[source]\nuri_file = "{uri_file}"\n')


def test_a_mongo_backup_passes_with_its_uri(home: Path, tmp_path: Path, mongo_peer: MongoPeer) -> None:
    out = check(home, mongo_job(tmp_path, secret_file(tmp_path, "uri", mongo_peer.uri)))
    assert out.exit_code == 0, out.lines
    assert "server version" in out.detail("source", "connects")


def test_a_mongo_backup_with_a_wrong_password_fails_at_connecting(home: Path, tmp_path: Path, mongo_peer: MongoPeer) -> None:
    entry = load()["mongo"]
    if not entry.get("auth_port"):
        pytest.fail("the mongo peer has no authenticating listener (auth_port) in its state")
    uri = f"mongodb://{entry['auth_user']}:wrong-mongo-password@127.0.0.1:{entry['auth_port']}/"
    out = check(home, mongo_job(tmp_path, secret_file(tmp_path, "uri", uri)))
    assert out.exit_code == 1 and out.failed() == [("source", "connects")]
    assert "wrong-mongo-password" not in out.text

"""Accounts and grants into a FRESH MariaDB server, one that never held the snapshot's accounts
(a second server started for the test): with `users = true` the role, the user with its password
hash, its grants (database, table, column), its default role come back and it logs in with its
old password; with `privileges = "skip"` a snapshot taken without the accounts restores into such
a server with its views, routines and triggers created as the restoring account, so they work,
where keeping a DEFINER the server lacks leaves a view that fails each time it is read."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from davit.adapters.repository.repository import Repository
from davit.domain.errors import InvalidJob
from davit.domain.jobs import job_from_dict
from tests.integration.mysql.helpers import Maria, backup_spec, run_backup, run_restore
from tests.peers.state import MariadbPeer

pytestmark = pytest.mark.mariadb


def restore_into(peer: MariadbPeer, snapshot: str, **target: Any) -> Any:
    server = {"host": peer.host, "port": peer.port, "user": peer.user, "password_file": peer.password_file}
    spec = {"name": "r", "kind": "mysql.restore", "source": {"snapshot": snapshot}, "target": {**server, **target}}
    return job_from_dict(spec, "r.toml")


def answer(maria: Maria, statement: str, db: str | None = None) -> list[tuple[Any, ...]]:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return sorted(tuple(r) for r in cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def shop(maria: Maria) -> Any:
    """A database with a table and objects whose DEFINER is the test's user, the user and its role."""
    shop = maria.db("shop")
    user, role = f"app_{maria.tag}", f"reader_{maria.tag}"
    maria.execute(
        None,
        f"CREATE DATABASE `{shop}`",
        f"CREATE ROLE `{role}`",
        f"CREATE USER `{user}`@'%' IDENTIFIED BY 'App-pw-7' WITH MAX_QUERIES_PER_HOUR 99",
        f"GRANT SELECT ON `{shop}`.* TO `{role}`",
        f"GRANT `{role}` TO `{user}`@'%'",
        f"SET DEFAULT ROLE `{role}` FOR `{user}`@'%'",
        f"GRANT INSERT, EXECUTE ON `{shop}`.* TO `{user}`@'%'",
    )
    maria.execute(
        shop,
        "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(20))",
        "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
        f"GRANT UPDATE (note) ON t TO `{user}`@'%'",
        f"GRANT SELECT ON t TO `{user}`@'%'",  # for its view: a definer's roles do not count
        f"CREATE DEFINER=`{user}`@'%' SQL SECURITY DEFINER VIEW v AS SELECT id FROM t",
        f"CREATE DEFINER=`{user}`@'%' FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
    )
    yield {"db": shop, "user": user, "role": role}
    maria.execute(None, f"DROP USER IF EXISTS `{user}`@'%'", f"DROP ROLE IF EXISTS `{role}`")


def test_accounts_their_passwords_and_grants_come_back_in_a_fresh_server(
    maria: Maria, repo: Repository, shop: dict[str, str], fresh_mariadb_server: MariadbPeer
) -> None:
    db, user, role = shop["db"], shop["user"], shop["role"]
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[db], users=True), "b1")
    fresh = Maria(fresh_mariadb_server)
    assert answer(fresh, f"SELECT user FROM mysql.user WHERE user IN ('{user}', '{role}')") == []

    run_restore(repo, restore_into(fresh_mariadb_server, "b1", users=True), "r1")

    for statement in (f"SHOW CREATE USER `{user}`@'%'", f"SHOW GRANTS FOR `{user}`@'%'", f"SHOW GRANTS FOR `{role}`"):
        assert answer(fresh, statement) == answer(maria, statement)  # the hash, limits, grants, default role
    conn = pymysql.connect(host=fresh.peer.host, port=fresh.peer.port, user=user, password="App-pw-7", database=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, twice(id) FROM v JOIN t USING (id) ORDER BY id")  # the default role's SELECT
            assert cur.fetchall() == ((1, 2), (2, 4))
            cur.execute("UPDATE t SET note = 'uno' WHERE id = 1")  # the column grant
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        pymysql.connect(host=fresh.peer.host, port=fresh.peer.port, user=user, password="not-it", database=db)


def test_privileges_skip_creates_the_objects_as_the_restoring_account_in_a_server_lacking_the_definer(
    maria: Maria, repo: Repository, shop: dict[str, str], fresh_mariadb_server: MariadbPeer
) -> None:
    db = shop["db"]
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[db]), "b1")
    fresh = Maria(fresh_mariadb_server)

    run_restore(repo, restore_into(fresh_mariadb_server, "b1", rename={db: "kept"}), "r1")
    with pytest.raises(pymysql.err.OperationalError, match="definer"):  # kept: the definer does not exist here
        answer(fresh, "SELECT id FROM v", "kept")
    run_restore(repo, restore_into(fresh_mariadb_server, "b1", rename={db: "skipped"}, privileges="skip"), "r2")

    assert answer(fresh, "SELECT id, twice(id) FROM v", "skipped") == [(1, 2), (2, 4)]
    definers = "SELECT DEFINER FROM information_schema.{} WHERE {} = 'skipped'"
    admin = f"{fresh.peer.user}@%"
    assert answer(fresh, definers.format("VIEWS", "TABLE_SCHEMA")) == [(admin,)]
    assert answer(fresh, definers.format("ROUTINES", "ROUTINE_SCHEMA")) == [(admin,)]


def test_privileges_skip_with_users_is_refused_in_the_job_file(fresh_mariadb_server: MariadbPeer) -> None:
    with pytest.raises(InvalidJob, match="needs users = false"):
        restore_into(fresh_mariadb_server, "b1", users=True, privileges="skip")

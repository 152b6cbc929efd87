"""`roles = true`: the cluster's roles (attributes, password hashes, memberships, settings), the
tables' owners and grants and the database's own grants come back after the roles were dropped;
a role that exists on restore is kept with its password unless the job asks to replace it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from davit.adapters.repository.repository import Repository
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows

pytestmark = pytest.mark.postgres


@pytest.fixture
def people(pg: Pg) -> Iterator[dict[str, str]]:
    """Two roles of this test: an application login that is a member of a read-only group."""
    names = {"app": f"app_{pg.tag}", "read": f"read_{pg.tag}"}
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(names["read"])))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 7 PASSWORD 'app-Secret-1' IN ROLE {}").format(
                sql.Identifier(names["app"]), sql.Identifier(names["read"])
            )
        )
        conn.execute(sql.SQL("ALTER ROLE {} SET work_mem = '8MB'").format(sql.Identifier(names["app"])))
    yield names
    with pg.connect() as conn:
        for db in pg.created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in names.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def shop_of(people: dict[str, str]) -> str:
    app, read = (sql.Identifier(people[k]).as_string() for k in ("app", "read"))
    return f"""
CREATE TABLE orders (id serial PRIMARY KEY, total numeric);
INSERT INTO orders (total) SELECT i FROM generate_series(1, 20) i;
ALTER TABLE orders OWNER TO {app};
GRANT SELECT ON orders TO {read};
"""


def database_grants(pg: Pg, db: str, people: dict[str, str]) -> None:
    with pg.connect() as conn:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), sql.Identifier(people["app"])))


def login(pg: Pg, db: str, user: str, password: str) -> psycopg.Connection[Any]:
    p = pg.peer
    return psycopg.connect(host=p.host, port=p.port, user=user, password=password, dbname=db, autocommit=True)


def hash_of(pg: Pg, role: str) -> str:
    return str(rows(pg, "postgres", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")[0][0])


def drop_roles(pg: Pg, db: str, people: dict[str, str]) -> None:
    with pg.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in (people["app"], people["read"]):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_roles_owners_and_grants_come_back_after_the_roles_were_dropped(pg: Pg, people: dict[str, str], tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, shop_of(people))
    database_grants(pg, shop, people)
    app_hash = hash_of(pg, people["app"])
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop, job={"roles": True})
    drop_roles(pg, shop, people)

    ctx = restore(pg, repo, shop, copy, job={"roles": True})
    assert hash_of(pg, people["app"]) == app_hash
    app, read = people["app"], people["read"]
    assert rows(pg, "postgres", f"SELECT rolcanlogin, rolconnlimit, rolconfig FROM pg_roles WHERE rolname = '{app}'") == [
        (True, 7, ["work_mem=8MB"])
    ]
    assert rows(pg, "postgres", f"SELECT pg_has_role('{app}', '{read}', 'MEMBER')") == [(True,)]
    assert rows(pg, copy, "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'") == [(app,)]
    assert rows(pg, copy, f"SELECT has_table_privilege('{read}', 'orders', 'SELECT')") == [(True,)]
    assert rows(pg, copy, f"SELECT has_database_privilege('{read}', '{copy}', 'CONNECT')") == [(False,)]
    with login(pg, copy, app, "app-Secret-1") as conn:  # the password works: the hash came back
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (20,)
    assert not [w for w in ctx.warnings if app in w]


def test_a_role_that_exists_keeps_its_password_unless_the_job_asks_to_replace_it(
    pg: Pg, people: dict[str, str], tmp_path: Path
) -> None:
    shop, copy, again = pg.name("shop"), pg.name("copy"), pg.name("again")
    make_db(pg, shop, shop_of(people))
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop, job={"roles": True})
    app = people["app"]
    with pg.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD 'changed-Since-2'").format(sql.Identifier(app)))

    ctx = restore(pg, repo, shop, copy, job={"roles": True})
    assert any("kept as they are" in w and app in w for w in ctx.warnings)
    with login(pg, copy, app, "changed-Since-2"):
        pass
    restore(pg, repo, shop, again, run_id="r2", job={"roles": True, "replace_role_passwords": True})
    with login(pg, again, app, "app-Secret-1"):
        pass
    with pytest.raises(psycopg.OperationalError):
        login(pg, again, app, "changed-Since-2")

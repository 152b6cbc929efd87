"""Roles and grants into a FRESH cluster, one that never held the snapshot's roles (a second
PostgreSQL started for the test): with `roles = true` the roles come back with their attributes,
memberships, settings and password hashes (the users log in with their old passwords), objects
keep their owners and grants and the database its grants; with `privileges = "skip"` the same
snapshot restores into a cluster lacking the roles, everything owned by the restoring user,
where keeping the grants fails naming the missing role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError
from tests.integration.postgres.test_postgres_roles import people as people  # the fixture
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.postgres


def shop_of(people: dict[str, str]) -> str:
    app, read = (sql.Identifier(people[k]).as_string() for k in ("app", "read"))
    return f"""
CREATE SCHEMA sales AUTHORIZATION {app};
CREATE TABLE sales.orders (id serial PRIMARY KEY, total numeric, note text);
INSERT INTO sales.orders (total, note) SELECT i, 'n' || i FROM generate_series(1, 20) i;
ALTER TABLE sales.orders OWNER TO {app};
GRANT USAGE ON SCHEMA sales TO {read};
GRANT SELECT ON sales.orders TO {read};
GRANT UPDATE (note) ON sales.orders TO {read};
CREATE VIEW sales.big AS SELECT * FROM sales.orders WHERE total > 10;
ALTER VIEW sales.big OWNER TO {app};
ALTER DEFAULT PRIVILEGES FOR ROLE {app} IN SCHEMA sales GRANT SELECT ON TABLES TO {read};
"""


ROLES_SQL = """SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolconnlimit, rolconfig
FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1"""
HASHES_SQL = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) ORDER BY 1"
MEMBERS_SQL = """SELECT r.rolname, m.rolname, am.admin_option FROM pg_auth_members am
JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member WHERE m.rolname = ANY(%s) ORDER BY 1, 2"""
GRANTS_SQL = """SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), c.relacl::text FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sales' AND c.relkind IN ('r', 'v', 'S') ORDER BY 2
"""
OTHER_ACL_SQL = """SELECT 'schema', nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace WHERE nspname = 'sales'
UNION ALL SELECT 'column', attname, '', attacl::text FROM pg_attribute WHERE attrelid = 'sales.orders'::regclass
  AND attacl IS NOT NULL
UNION ALL SELECT 'default', defaclobjtype::text, pg_get_userbyid(defaclrole), defaclacl::text FROM pg_default_acl ORDER BY 1, 2"""


def cluster(pg: Pg, query: str, params: Any = None, db: str = "postgres") -> list[tuple[Any, ...]]:
    with pg.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def database_acl(pg: Pg, db: str) -> list[tuple[Any, ...]]:
    return cluster(pg, "SELECT pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname = %s", (db,))


def login(peer: PostgresPeer, db: str, user: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=peer.host, port=peer.port, user=user, password=password, dbname=db, autocommit=True)


def prepared_snapshot(pg: Pg, people: dict[str, str], tmp_path: Path, roles: bool) -> tuple[str, Repository]:
    shop = pg.name("shop")
    make_db(pg, shop, shop_of(people))
    with pg.connect() as conn:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(shop)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(shop), sql.Identifier(people["app"])))
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop, job={"roles": roles})
    return shop, repo


def test_roles_their_passwords_and_grants_come_back_in_a_fresh_cluster(
    pg: Pg, people: dict[str, str], fresh_postgres_server: PostgresPeer, tmp_path: Path
) -> None:
    shop, repo = prepared_snapshot(pg, people, tmp_path, roles=True)
    fresh = Pg(fresh_postgres_server)
    names = sorted(people.values())
    assert cluster(fresh, ROLES_SQL, (names,)) == []  # the fresh cluster has none of them

    restore(fresh, repo, shop, shop, job={"roles": True})

    for query in (ROLES_SQL, HASHES_SQL, MEMBERS_SQL):
        assert cluster(fresh, query, (names,)) == cluster(pg, query, (names,))
    assert cluster(fresh, GRANTS_SQL, db=shop) == cluster(pg, GRANTS_SQL, db=shop)
    assert cluster(fresh, OTHER_ACL_SQL, db=shop) == cluster(pg, OTHER_ACL_SQL, db=shop)
    assert database_acl(fresh, shop)[0][1] == database_acl(pg, shop)[0][1]
    with login(fresh_postgres_server, shop, people["app"], "app-Secret-1") as conn:  # the hash came back
        assert conn.execute("SELECT count(*) FROM sales.big").fetchone() == (10,)
        conn.execute("CREATE TABLE sales.later (x int)")  # the default privileges came back too
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(fresh_postgres_server, shop, people["app"], "not-the-password")


def test_privileges_skip_restores_into_a_cluster_lacking_the_roles(
    pg: Pg, people: dict[str, str], fresh_postgres_server: PostgresPeer, tmp_path: Path
) -> None:
    shop, repo = prepared_snapshot(pg, people, tmp_path, roles=False)
    fresh = Pg(fresh_postgres_server)

    with pytest.raises(PermanentError, match=people["read"]):  # keeping the grants names the role it lacks
        restore(fresh, repo, shop, shop)
    restore(fresh, repo, shop, f"{shop}_skip", job={"privileges": "skip"})

    copy = f"{shop}_skip"
    admin = fresh_postgres_server.user
    assert cluster(fresh, GRANTS_SQL, db=copy) == [
        ("sales", "big", admin, None),
        ("sales", "orders", admin, None),
        ("sales", "orders_id_seq", admin, None),
    ]
    assert cluster(fresh, OTHER_ACL_SQL, db=copy) == [("schema", "sales", admin, None)]
    assert rows(fresh, copy, "SELECT count(*), sum(total) FROM sales.orders") == [(20, 210)]
    assert cluster(fresh, ROLES_SQL, (sorted(people.values()),)) == []

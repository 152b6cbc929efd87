"""Row-level security policies `TO` roles a fresh cluster lacks, restored with
`privileges = "skip"`: each policy keeps the roles the target has, and one left naming none of
them is not created; a warning names every policy and role left out. A policy for roles that do
not exist applies to nobody, so what any existing role may read or write is what the source
allowed it: nothing is widened (as turning them into PUBLIC policies would)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from davit.adapters.repository.repository import Repository
from tests.integration.postgres.test_postgres_roles import people as people  # the fixture
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.postgres

POLICIES_SQL = """SELECT polname, polpermissive, polcmd,
  ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(polroles) r ORDER BY 1)::text,
  pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)
FROM pg_policy ORDER BY 1"""


@pytest.fixture
def odd_role(pg: Pg) -> Iterator[str]:
    """A role whose name needs quoting and reads like the rest of a CREATE POLICY."""
    name = f'Odd, "USING (true) {pg.tag}'
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    yield name
    with pg.connect() as conn:
        for db in pg.created:  # the policies naming it go with their database
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def shop_of(people: dict[str, str], odd: str, admin: str) -> str:
    app, read, odd_, admin_ = (sql.Identifier(n).as_string() for n in (people["app"], people["read"], odd, admin))
    return f"""
CREATE TABLE notes (id int PRIMARY KEY, owner text, body text);
INSERT INTO notes SELECT i, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END, 'note ' || i FROM generate_series(1, 10) i;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers_only ON notes FOR SELECT TO {read} USING (owner = 'even');
CREATE POLICY shared ON notes TO {app}, {admin_}, {odd_} USING (owner = current_user) WITH CHECK (owner <> 'odd');
CREATE POLICY narrowed ON notes AS RESTRICTIVE FOR UPDATE TO {odd_} USING (id < 5);
CREATE POLICY everyone ON notes FOR SELECT USING (id > 8);
GRANT SELECT ON notes TO {read};
"""


def test_policies_for_roles_the_target_lacks_keep_only_the_roles_it_has(
    pg: Pg, people: dict[str, str], odd_role: str, fresh_postgres_server: PostgresPeer, tmp_path: Path
) -> None:
    admin = fresh_postgres_server.user
    shop = pg.name("shop")
    make_db(pg, shop, shop_of(people, odd_role, admin))
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    fresh = Pg(fresh_postgres_server)

    ctx = restore(fresh, repo, shop, shop, job={"privileges": "skip"})

    assert rows(fresh, shop, POLICIES_SQL) == [
        ("everyone", True, "r", "{PUBLIC}", "(id > 8)", None),
        ("shared", True, "*", "{" + admin + "}", "(owner = CURRENT_USER)", "(owner <> 'odd'::text)"),
    ]
    assert rows(fresh, shop, "SELECT relrowsecurity FROM pg_class WHERE relname = 'notes'") == [(True,)]
    assert rows(fresh, shop, "SELECT count(*) FROM notes") == [(10,)]
    warned = "\n".join(ctx.warnings)
    for policy in ("readers_only", "narrowed", "shared"):
        assert policy in warned
    for role in (people["read"], people["app"]):
        assert role in warned
    assert odd_role.replace('"', '""') in warned or odd_role in warned

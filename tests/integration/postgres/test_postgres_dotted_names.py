"""Table and schema names with dots: schema `a` with table `b.c` and schema `a.b` with table
`c` are two tables whose `schema.table` text is the same. A tenant who may create a schema in
a shared database must not be able to make a backup store (or a restore load) its table in
place of another's: both come back, each with its own rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows

pytestmark = pytest.mark.postgres

TENANTS = """
CREATE SCHEMA a;
CREATE TABLE a."b.c" (owner text);
INSERT INTO a."b.c" VALUES ('victim'), ('victim');
CREATE SCHEMA "a.b";
CREATE TABLE "a.b".c (owner text);
INSERT INTO "a.b".c VALUES ('attacker');
"""


def test_two_tables_whose_dotted_names_read_alike_both_come_back_with_their_own_rows(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("atk_dots"), pg.name("atk_dots_back")
    make_db(pg, shop, TENANTS)
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    restore(pg, repo, shop, copy)
    assert rows(pg, copy, 'SELECT owner FROM a."b.c"') == [("victim",), ("victim",)]
    assert rows(pg, copy, 'SELECT owner FROM "a.b".c') == [("attacker",)]


def test_plain_names_keep_the_paths_and_steps_older_snapshots_and_runs_have() -> None:
    from davit.adapters.postgres.layout import table_path
    from davit.adapters.postgres.restore import _table_step

    assert table_path("shop", "public", "orders") == "shop/table/public.orders"
    assert _table_step("shop", "public", "orders") == "table:shop.public.orders"
    assert table_path("shop", "a", "b.c") != table_path("shop", "a.b", "c")

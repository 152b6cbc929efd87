"""Materialized views that read one another, named so that the reader sorts first: postgres.restore
and `pg_restore` of `davit export pgdump` both bring them back populated (found while building
the export: the restore refreshed them by name and failed on `a_top`, whose `b_base` was not
populated yet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.postgres.dumpdir import export_databases
from davit.adapters.repository.repository import Repository
from tests.integration.postgres.test_postgres_pgdump_export import pg_env, pg_restore, units_by_db
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows

pytestmark = pytest.mark.postgres

CHAIN = """
CREATE TABLE t AS SELECT i AS x FROM generate_series(1, 5) i;
CREATE MATERIALIZED VIEW c_base AS SELECT x FROM t;
CREATE VIEW b_middle AS SELECT x FROM c_base WHERE x > 1;
CREATE MATERIALIZED VIEW a_top AS SELECT count(*) AS n FROM b_middle;
"""


def test_a_materialized_view_reading_one_named_after_it_is_restored_populated(pg: Pg, tmp_path: Path) -> None:
    shop, copy, replayed = pg.name("sqlx_mv"), pg.name("sqlx_mv_restored"), pg.name("sqlx_mv_pgrestored")
    make_db(pg, shop, CHAIN)
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    restore(pg, repo, shop, copy)
    assert rows(pg, copy, "SELECT n FROM a_top") == [(4,)]
    export_databases(tmp_path / "dump", units_by_db(repo, "b1"), repo.read_chunk, "snapshot b1", nested=False)
    make_db(pg, replayed, "")
    pg_restore(pg_env(pg, tmp_path), replayed, tmp_path / "dump", "-j", "2")
    assert rows(pg, replayed, "SELECT n FROM a_top") == [(4,)]

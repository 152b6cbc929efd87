"""A table the target cannot take fails a PostgreSQL restore naming it (database, schema and
table), with the server's reason and never the password; the table keeps what it held (its load
is one transaction), as mysql.restore's tests show for MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.postgres.client import PostgresRefused
from davit.adapters.repository.repository import Repository
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows

pytestmark = pytest.mark.postgres


def test_a_table_the_target_refuses_fails_the_restore_naming_it(pg: Pg, tmp_path: Path) -> None:
    shop, target = pg.name("fail_shop"), pg.name("fail_target")
    make_db(
        pg,
        shop,
        "CREATE TABLE fine (id int PRIMARY KEY); INSERT INTO fine VALUES (1), (2);"
        'CREATE TABLE "Refused" (id int PRIMARY KEY, v int); INSERT INTO "Refused" VALUES (1, 5), (2, 100);',
    )
    # merge: the target's own table is kept, with a constraint the snapshot's second row breaks
    make_db(pg, target, 'CREATE TABLE "Refused" (id int PRIMARY KEY, v int CHECK (v < 10)); INSERT INTO "Refused" VALUES (7, 7);')
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    with pytest.raises(PostgresRefused) as failed:
        restore(pg, repo, shop, target, if_exists="merge")
    said = str(failed.value)
    assert f"loading table {target}.public.Refused failed" in said, said
    assert "violates check constraint" in said, said
    assert pg.peer.password not in said
    assert rows(pg, target, 'SELECT id, v FROM "Refused"') == [(7, 7)]  # rolled back whole: not emptied, nothing half-loaded

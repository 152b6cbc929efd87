"""A PostgreSQL restore is verified at its end (`finish`), against the snapshot: every table's
row count and every sequence's value. A target changed between the loads and the check (a
client writing into the restored database while a resumed restore was finishing) fails the
run naming the table and the sequence, with what was found and what the snapshot holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.postgres.restore import PostgresRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import SHOP, backup, make_db, rows

pytestmark = pytest.mark.postgres


def test_a_count_or_sequence_that_differs_from_the_snapshot_fails_the_restore_naming_them(pg: Pg, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    shop, copy = pg.name("ver_shop"), pg.name("ver_copy")
    make_db(pg, shop, SHOP)
    backup(pg, repo, shop)
    spec = {"name": "pgr", "kind": "postgres.restore", "source": {"job": "pg"}, "target": pg.server(rename={shop: copy})}
    ctx = MemoryRunContext(run_id="r1")
    work = PostgresRestoreWork(RunInputs(job_from_dict(spec, "pgr.toml"), "r1", repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    with pg.connect(copy) as conn:
        conn.execute("INSERT INTO lookup VALUES ('c', 'Gamma')")
        conn.execute("SELECT setval('customers_id_seq', 999)")
    with pytest.raises(PermanentError) as failed:
        work.finish(ctx)
    said = str(failed.value)
    assert f"{copy}.public.lookup: 3 rows, the snapshot has 2" in said, said
    assert f"{copy}.public.customers_id_seq: sequence at (999, True), the snapshot has (50, True)" in said, said
    assert "orders" not in said and "audit" not in said, said  # only what differs
    with pg.connect(copy) as conn:  # undone, the same restore's check passes
        conn.execute("DELETE FROM lookup WHERE code = 'c'")
        conn.execute("SELECT setval('customers_id_seq', 50)")
    assert work.finish(ctx)["rows"] == 50 + 200 + 500 + 30 + 2
    assert rows(pg, copy, "SELECT count(*) FROM orders") == [(500,)]

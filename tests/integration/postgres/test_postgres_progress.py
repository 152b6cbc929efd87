"""Progress of postgres.backup and postgres.restore as `davit show --follow` draws it: a
backup's table steps are told the rows the catalog estimates and every checkpoint, partial
ones too, carries the rows read so far; a restore's table steps are told the snapshot's own
row counts, exactly; the large objects' step counts them exactly both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from davit.adapters.postgres.backup import PostgresBackupWork
from davit.adapters.postgres.restore import PostgresRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.fakes import ProgressRunContext
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture

pytestmark = pytest.mark.postgres

# small chunks, one per pack: a checkpoint every chunk, so a table of a few MiB has many partial ones
CHATTY = Tuning(chunk_size=64 << 10, pack_max_chunks=1)


def _run_backup(pg: Pg, repo: Repository, db: str) -> ProgressRunContext:
    ctx = ProgressRunContext(run_id="b1")
    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[db])}
    work = PostgresBackupWork(RunInputs(job_from_dict(spec, "pg.toml"), "b1", CHATTY, repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def _shop(pg: Pg) -> str:
    shop = pg.name("sqlprog_shop")
    with pg.connect() as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(shop)))
    with pg.connect(shop) as conn:
        conn.execute("CREATE TABLE orders AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 60000) i")
        conn.execute("CREATE TABLE notes AS SELECT i AS id, repeat('n', 20) AS t FROM generate_series(1, 700) i")
        # autovacuum kept off: the catalog never counts its rows, the backup cannot estimate them
        conn.execute("CREATE TABLE fresh (id int) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO fresh SELECT generate_series(1, 300)")
        conn.execute("ANALYZE orders")
        conn.execute("ANALYZE notes")
        conn.execute("SELECT lo_from_bytea(0, 'a'::bytea), lo_from_bytea(0, 'b'::bytea), lo_from_bytea(0, 'c'::bytea)")
    return shop


def test_a_backup_tells_each_table_its_estimated_rows_and_its_rows_read_at_every_checkpoint(pg: Pg, tmp_path: Path) -> None:
    shop = _shop(pg)
    ctx = _run_backup(pg, Repository.open(tmp_path / "repo"), shop)

    orders = ctx.of(f"table:{shop}.public.orders")
    assert len(orders) > 3  # partial checkpoints, then the unit's last
    last = orders[-1]
    assert last["items_done"] == 60000
    assert 30000 <= last["items_total"] <= 120000  # an estimate, within a factor of two after ANALYZE
    partial = [c["items_done"] for c in orders[:-1]]
    assert partial == sorted(partial) and partial[0] > 0 and partial[-1] <= 60000
    assert all(c["items_total"] == last["items_total"] for c in orders)  # told before the first one
    assert [c["bytes_done"] for c in orders] == sorted(c["bytes_done"] for c in orders) and orders[0]["bytes_done"] > 0

    notes = ctx.of(f"table:{shop}.public.notes")[-1]
    assert notes["items_done"] == 700 and 350 <= notes["items_total"] <= 1400

    fresh = ctx.of(f"table:{shop}.public.fresh")[-1]
    assert fresh["items_done"] == 300 and fresh["items_total"] is None  # unknown, never -1

    blobs = ctx.of(f"lo:{shop}")[-1]
    assert blobs["items_done"] == blobs["items_total"] == 3


def test_a_restore_tells_each_table_the_snapshots_own_row_count(pg: Pg, tmp_path: Path) -> None:
    shop = _shop(pg)
    copy = pg.name("sqlprog_copy")
    repo = Repository.open(tmp_path / "repo")
    _run_backup(pg, repo, shop)
    with pg.connect(shop) as conn:
        conn.execute("INSERT INTO orders SELECT i, 'later' FROM generate_series(1, 5000) i")
        conn.execute("ANALYZE orders")  # the source moved on: the restore counts what the snapshot holds

    ctx = ProgressRunContext(run_id="r1")
    spec = {"name": "pgr", "kind": "postgres.restore", "source": {"job": "pg"}, "target": pg.server(rename={shop: copy})}
    work = PostgresRestoreWork(RunInputs(job_from_dict(spec, "pgr.toml"), "r1", repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)

    expected: dict[str, Any] = {"orders": 60000, "notes": 700, "fresh": 300}
    for table, rows in expected.items():
        [last] = ctx.of(f"table:{copy}.public.{table}")  # one checkpoint, once its rows are committed
        assert last["items_done"] == last["items_total"] == rows
        assert last["bytes_done"] > 0

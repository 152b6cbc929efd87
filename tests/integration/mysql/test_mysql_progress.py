"""Progress of mysql.backup and mysql.restore as `davit show --follow` draws it: a backup's
table steps are told the rows the server estimates (`TABLE_ROWS`) and every checkpoint carries
the rows read so far; a restore's table steps are told the snapshot's own row counts, exactly."""

from __future__ import annotations

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from tests.fakes import ProgressRunContext
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, run_backup, run_restore

pytestmark = pytest.mark.mariadb

# one chunk per pack: a checkpoint every chunk, so a table of a few MiB has many partial ones
CHATTY = Tuning(pack_max_chunks=1, checkpoint_seconds=60)


def _shop(maria: Maria) -> str:
    db = maria.db("sqlprog_shop")
    maria.execute(None, f"CREATE DATABASE {db}")
    maria.execute(
        db,  # (the seq_1_to_N tables of the SEQUENCE engine need a current database)
        f"CREATE TABLE {db}.orders (id INT PRIMARY KEY, h CHAR(32)) ENGINE=InnoDB",
        f"INSERT INTO {db}.orders SELECT seq, MD5(seq) FROM seq_1_to_40000",
        f"CREATE TABLE {db}.log (id INT PRIMARY KEY, msg VARCHAR(20)) ENGINE=Aria",
        f"INSERT INTO {db}.log SELECT seq, 'x' FROM seq_1_to_250",
        f"CREATE TABLE {db}.shape (id INT PRIMARY KEY) ENGINE=InnoDB",
        f"ANALYZE TABLE {db}.orders, {db}.log",
    )
    return db


def test_a_backup_tells_each_table_its_estimated_rows_and_its_rows_read_at_every_checkpoint(
    maria: Maria, repo: Repository
) -> None:
    db = _shop(maria)
    spec = backup_spec("my", maria, databases=[db], chunk_kib=64, schema_only=[f"{db}.shape"])
    ctx, _ = run_backup(repo, spec, "b1", ProgressRunContext(run_id="b1"), tuning=CHATTY)
    assert isinstance(ctx, ProgressRunContext)

    orders = ctx.of(f"dump:{db}.orders")
    assert len(orders) > 3  # partial checkpoints, then the table's last
    last = orders[-1]
    assert last["items_done"] == 40000
    assert 20000 <= last["items_total"] <= 80000  # InnoDB's estimate, within a factor of two after ANALYZE
    partial = [c["items_done"] for c in orders[:-1]]
    assert partial == sorted(partial) and 0 < partial[0] < 40000
    assert all(c["items_total"] == last["items_total"] for c in orders)  # told before the first one

    log = ctx.of(f"dump:{db}.log")[-1]
    assert log["items_done"] == 250 and 125 <= log["items_total"] <= 500

    shape = ctx.of(f"dump:{db}.shape")[-1]
    assert shape["items_done"] == 0 and shape["items_total"] is None  # no rows read: none told


def test_a_restore_tells_each_table_the_snapshots_own_row_count(maria: Maria, repo: Repository) -> None:
    db = _shop(maria)
    copy = maria.db("sqlprog_copy")
    run_backup(repo, backup_spec("my", maria, databases=[db]), "b1")
    maria.execute(db, "INSERT INTO orders SELECT seq + 40000, 'later' FROM seq_1_to_5000")  # the source moves on

    spec = restore_spec("myr", maria, {"job": "my"}, rename={db: copy})
    ctx, _ = run_restore(repo, spec, "r1", ProgressRunContext(run_id="r1"))
    assert isinstance(ctx, ProgressRunContext)

    for table, rows in {"orders": 40000, "log": 250}.items():
        # one checkpoint naming the load's connection before the first row, one at its commit
        loading, last = ctx.of(f"data:{copy}.{table}")
        assert loading["items_done"] == 0 and loading["items_total"] == rows
        assert last["items_done"] == last["items_total"] == rows

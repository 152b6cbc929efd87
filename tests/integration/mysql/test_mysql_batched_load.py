"""A table that is empty when its restore load begins loads one committed transaction per chunk
(as `mariadb` replays a dump), not all its rows in one transaction whose row undo outgrew the
peer's 128 MB buffer pool. Interrupted after some chunks committed, the resumed load finds those
rows and empties the table and loads it again in one transaction (as the issue asks of a table
half-loaded): no row twice, none lost, the AUTO_INCREMENT counter as the snapshot's. A table that held rows of its own (`merge`)
still loads in one transaction: interrupted, it shows its old rows, never a mix."""

from __future__ import annotations

from typing import Any

import pytest

from davit.adapters.mysql.layout import qualified
from davit.adapters.mysql.restore import MysqlRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.mysql.helpers import SMALL, Maria, backup_spec, contents, restore_spec, run_backup

pytestmark = pytest.mark.mariadb

ROWS = 20_000
COUNTER = 50_000  # the source's AUTO_INCREMENT, above its largest id


class Killed(BaseException):
    """davitd killed: no code of the load runs after it (a BaseException, which no cleanup catches)."""


class Watching(MemoryRunContext):
    """A run context that, at each chunk's end of the table's load (its `check_stop`), counts the
    target table's rows as another connection sees them, and at chunk `stop_at` stops the run
    (RunStopped, a cancel) or, with `kill`, ends the load as a kill -9 would."""

    def __init__(self, maria: Maria, db: str, stop_at: int | None = None, kill: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.maria, self.db, self.stop_at, self.kill = maria, db, stop_at, kill
        self.seen: list[int] = []
        self.loading: set[str] = set()

    def step_started(self, step: str, *, commits: bool = False) -> None:
        super().step_started(step, commits=commits)
        if step.startswith("data:"):
            self.loading.add(step)

    def check_stop(self) -> None:
        if not self.loading - self.done:
            return
        self.seen.append(rows(self.maria, self.db))
        if self.stop_at is not None and len(self.seen) >= self.stop_at:
            if self.kill:
                raise Killed()
            raise RunStopped("test stops the load mid-table")


def rows(maria: Maria, db: str) -> int:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM t")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def counter(maria: Maria, db: str) -> int:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 't'", (db,)
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def snapshot(maria: Maria, repo: Repository) -> str:
    """A table of ROWS rows in many 16 KiB chunks, whose id key is not unique (a doubled load
    would show) and whose AUTO_INCREMENT counter is above its largest id."""
    shop = maria.db("shop")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(
        shop,
        "CREATE TABLE t (id INT NOT NULL AUTO_INCREMENT, pad CHAR(64) NOT NULL, KEY (id)) ENGINE=InnoDB",
        f"INSERT INTO t SELECT seq, CONCAT(MD5(seq), MD5(seq + 1)) FROM seq_1_to_{ROWS}",
        f"ALTER TABLE t AUTO_INCREMENT = {COUNTER}",
    )
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop], chunk_kib=16), "b1")
    return shop


def test_an_empty_table_loads_chunk_by_chunk_and_a_resumed_load_replaces_its_rows_in_one_transaction(
    maria: Maria, repo: Repository, snapshot: str
) -> None:
    shop, target = snapshot, maria.db("target")
    spec = restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target})
    work = MysqlRestoreWork(RunInputs(spec, "r1", SMALL, repo=repo))
    ctx = Watching(maria, target, stop_at=3, kill=True, run_id="r1")
    details = work.prepare(ctx)
    with pytest.raises(Killed):
        work.run(ctx)
    # committed chunk by chunk: another connection saw rows while the load ran, and the
    # interrupted load left them (a single transaction shows 0 until its commit)
    assert 0 < ctx.seen[0] < ctx.seen[-1] < ROWS, ctx.seen
    assert rows(maria, target) == ctx.seen[-1]
    step = "data:" + qualified(target, "t")
    assert ctx.cursors[step]["batched"] is True and ctx.cursors[step]["count"] is None

    again = Watching(maria, target, run_id="r1", done={f"schema:{target}"}, cursors=dict(ctx.cursors))
    resumed = MysqlRestoreWork(RunInputs(spec, "r1", SMALL, details, repo=repo))
    resumed.run(again)
    summary = resumed.finish(again)

    # the resumed load found the interrupted load's rows: emptied and loaded again in ONE
    # transaction, so others see those rows unchanged until its commit, then the whole table
    assert set(again.seen) == {ctx.seen[-1]}, again.seen
    assert "batched" not in again.cursors[step]
    assert summary["rows"] == ROWS and rows(maria, target) == ROWS
    assert contents(maria, target) == contents(maria, shop)
    assert counter(maria, target) == counter(maria, shop) == COUNTER


def test_a_table_holding_rows_of_its_own_is_replaced_in_one_transaction(maria: Maria, repo: Repository, snapshot: str) -> None:
    shop, target = snapshot, maria.db("target")
    maria.execute(None, f"CREATE DATABASE `{target}`")
    maria.execute(
        target,
        "CREATE TABLE t (id INT NOT NULL AUTO_INCREMENT, pad CHAR(64) NOT NULL, KEY (id)) ENGINE=InnoDB",
        "INSERT INTO t SELECT seq, 'old' FROM seq_1_to_7",
    )
    spec = restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target}, if_exists="merge")
    work = MysqlRestoreWork(RunInputs(spec, "r1", SMALL, repo=repo))
    ctx = Watching(maria, target, stop_at=3, run_id="r1")
    work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert ctx.seen == [7, 7, 7] and rows(maria, target) == 7  # its old rows, until a commit that never came
    assert "batched" not in ctx.cursors["data:" + qualified(target, "t")]

    ctx = Watching(maria, target, run_id="r2")
    work = MysqlRestoreWork(RunInputs(spec, "r2", SMALL, repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    assert work.finish(ctx)["rows"] == ROWS
    assert contents(maria, target) == contents(maria, shop)


def test_a_stopped_batched_load_takes_its_committed_chunks_back_out(maria: Maria, repo: Repository, snapshot: str) -> None:
    shop, target = snapshot, maria.db("target")
    spec = restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target})
    work = MysqlRestoreWork(RunInputs(spec, "r1", SMALL, repo=repo))
    ctx = Watching(maria, target, stop_at=3, run_id="r1")
    work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert 0 < ctx.seen[-1] < ROWS, ctx.seen  # chunks were committed, and then taken out
    assert rows(maria, target) == 0
    assert counter(maria, target) == COUNTER

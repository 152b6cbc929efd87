"""mysql.restore loads `parallel` tables at once, shown by the server, not by timing: a second
connection holds the rows of one target table (`SELECT ... FOR UPDATE` in an open transaction)
and the restore's load of it is seen waiting for that row lock (information_schema.INNODB_TRX).
With parallel = 2 the other table is loaded and committed while that wait lasts; with
parallel = 1 the other table's load starts only after the held one is done.

INNODB_TRX is a cache the server refreshes only when nobody read it in the last 0.1 s (its
trx_i_s cache): polled faster than that it keeps showing what it held before the load began to
wait, forever. The test's first version polled every ~0.1 s (a new connection, then 50 ms), so on
a fast machine the wait was never seen and the load's DELETE ended by innodb_lock_wait_timeout.
`LockWaits` reads it at most every `TRX_FRESH_SECONDS`, and only for the load's own connection."""

from __future__ import annotations

import threading
import time

import pytest

from davit.adapters.mysql.restore import DATA
from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, run_backup, run_restore
from tests.integration.parallel_evidence import DEADLINE, OrderedContext, wait_for

pytestmark = pytest.mark.mariadb


def count(maria: Maria, db: str, table: str) -> int:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


# the server refreshes INNODB_TRX only when it was not read in the last 0.1 s (trx_i_s cache)
TRX_FRESH_SECONDS = 0.25


class LockWaits:
    """Whether the load of `table` (its own connection, recorded in its step's cursor before its
    first row) waits for a row lock, read from INNODB_TRX no faster than its cache refreshes."""

    def __init__(self, maria: Maria, ctx: OrderedContext, step: str, table: str) -> None:
        self.maria, self.ctx, self.step, self.table = maria, ctx, step, table
        self.last = 0.0

    def connection(self) -> int | None:
        loading = (self.ctx.cursor(self.step) or {}).get("loading")
        return int(loading["connection"]) if loading else None

    def waiting(self) -> bool:
        conn_id = self.connection()
        if conn_id is None:  # the load has not named its connection yet
            return False
        time.sleep(max(0.0, self.last + TRX_FRESH_SECONDS - time.monotonic()))
        conn = self.maria.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT trx_query FROM information_schema.INNODB_TRX"
                    " WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
                    (conn_id,),
                )
                rows = [str(r[0]) for r in cur.fetchall()]
        finally:
            self.last = time.monotonic()
            conn.close()
        # the load's DELETE of the stale row is the statement that waits (its row check takes no lock)
        return any(q.startswith(f"DELETE FROM `{self.table}`") for q in rows)


def restore_with_one_table_held(maria: Maria, repo: Repository, parallel: int) -> tuple[OrderedContext, str, bool]:
    """Restore `a_held` and `b_free` (in that order) into a target whose `a_held` row a second
    connection keeps locked until the restore's load of it is seen waiting and, with parallel > 1,
    until `b_free` is committed. Says whether `b_free` was loaded while `a_held` was still locked."""
    shop, target = maria.db("par_shop"), maria.db("par_target")
    maria.execute(None, f"CREATE DATABASE `{shop}`", f"CREATE DATABASE `{target}`")
    for db in (shop, target):
        maria.execute(db, "CREATE TABLE a_held (id INT PRIMARY KEY, v VARCHAR(20))", "CREATE TABLE b_free (id INT PRIMARY KEY)")
    maria.execute(shop, "INSERT INTO a_held VALUES (1, 'one'), (2, 'two')", "INSERT INTO b_free VALUES (1), (2), (3)")
    # a stale row the load deletes first: its DELETE waits for the second connection's row lock
    maria.execute(target, "INSERT INTO a_held VALUES (9, 'stale')")
    # data_only: the restore's schema step leaves the target's tables alone
    run_backup(repo, backup_spec("par", maria, databases=[shop], data_only=[f"{shop}.a_held", f"{shop}.b_free"]), "b1")
    spec = restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target}, if_exists="merge", parallel=parallel)
    ctx = OrderedContext(run_id="r1")
    held = LockWaits(maria, ctx, DATA + f"{target}.a_held", "a_held")
    failed: list[BaseException] = []

    def restore() -> None:
        try:
            run_restore(repo, spec, "r1", ctx)
        except BaseException as exc:  # handed to the test's thread
            failed.append(exc)

    blocker = maria.connect(target)
    try:
        with blocker.cursor() as cur:
            cur.execute("START TRANSACTION")
            cur.execute("SELECT * FROM a_held FOR UPDATE")
        worker = threading.Thread(target=restore, daemon=True)
        worker.start()
        try:
            wait_for("the load of `a_held` waiting for the lock", held.waiting, failed)
            if parallel > 1:
                wait_for("`b_free` loaded", lambda: DATA + f"{target}.b_free" in ctx.done, failed)
            free_while_held = count(maria, target, "b_free") == 3
            assert held.waiting(), "the load of `a_held` stopped waiting while the lock was held"
            ctx.order.append(("mark", "unlocked"))
        finally:
            with blocker.cursor() as cur:
                cur.execute("ROLLBACK")
    finally:
        blocker.close()
    worker.join(DEADLINE)  # (the lock wait would end by innodb_lock_wait_timeout, 50 s by default)
    assert not worker.is_alive(), "the restore did not end after the lock was released"
    assert not failed, failed
    assert count(maria, target, "a_held") == 2 and count(maria, target, "b_free") == 3
    return ctx, target, free_while_held


def test_with_parallel_2_a_table_loads_while_another_one_waits_for_its_lock(maria: Maria, repo: Repository) -> None:
    ctx, target, free_while_held = restore_with_one_table_held(maria, repo, parallel=2)
    held, free = DATA + f"{target}.a_held", DATA + f"{target}.b_free"
    assert free_while_held  # committed and visible to another connection while `a_held` was locked
    unlocked = ctx.at("mark", "unlocked")
    assert ctx.at("started", held) < unlocked and ctx.at("completed", free) < unlocked < ctx.at("completed", held)


def test_with_parallel_1_the_next_table_waits_for_the_held_one(maria: Maria, repo: Repository) -> None:
    ctx, target, free_while_held = restore_with_one_table_held(maria, repo, parallel=1)
    held, free = DATA + f"{target}.a_held", DATA + f"{target}.b_free"
    assert not free_while_held
    assert ctx.at("started", held) < ctx.at("mark", "unlocked") < ctx.at("completed", held) < ctx.at("started", free)

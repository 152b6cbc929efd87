"""Two restores into one table at once (two restore jobs into one database, `if_exists =
"merge"`): the table ends with the snapshot's rows once, never twice. A load skips its DELETE on
an empty table, and that check takes no lock; each load holds the table's named lock
(`davit/adapters/mysql/loadlock.py`) from before the check to its commit, so the second finds the
first's rows and empties the table before loading its own."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from davit.adapters.mysql import restore
from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, rows_of, run_backup, run_restore

pytestmark = pytest.mark.mariadb

ROWS = 500


def test_two_restores_loading_one_table_at_once_leave_its_rows_once(
    maria: Maria, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop, target = maria.db("shop"), maria.db("target")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    # no unique key: nothing on the server stops a row inserted twice
    maria.execute(shop, "CREATE TABLE t (v INT NOT NULL) ENGINE=InnoDB", f"INSERT INTO t SELECT seq FROM seq_1_to_{ROWS}")
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop]), "b1")

    # both loads meet after their emptiness check (if both can get there: the lock lets only one)
    both_checked = threading.Barrier(2)
    checked = restore._has_rows

    def has_rows_then_meet(cur: Any, table: str) -> bool:
        found = checked(cur, table)
        try:
            both_checked.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass  # the other load waits for this one's lock: what should happen
        return found

    monkeypatch.setattr(restore, "_has_rows", has_rows_then_meet)
    failures: list[BaseException] = []

    def run(run_id: str) -> None:
        try:
            run_restore(
                repo, restore_spec(f"r-{run_id}", maria, {"snapshot": "b1"}, rename={shop: target}, if_exists="merge"), run_id
            )
        except BaseException as exc:  # reported below, with the other run's
            failures.append(exc)

    runs = [threading.Thread(target=run, args=(run_id,)) for run_id in ("r1", "r2")]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(120)
    assert not failures, failures
    assert rows_of(maria, target, "t") == rows_of(maria, shop, "t")  # each row once

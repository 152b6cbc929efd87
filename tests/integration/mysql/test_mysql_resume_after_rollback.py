"""A restore's table load killed in the middle of its transaction (davitd killed: its socket
closes while a big INSERT runs) leaves the server rolling that transaction back, holding the
table's rows, for seconds or minutes. The resumed load waits for that connection to be gone, as
the step's cursor names it, and then loads the table once, on its first attempt: no lock-wait
error even on a server that gives up on a row lock after 1 s. A load recorded on an earlier
server start is not waited for, even when its connection id is another connection's now."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from davit.adapters.mysql import client, rollbackwait
from davit.adapters.mysql.layout import qualified
from davit.adapters.mysql.restore import MysqlRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from tests.fakes import MemoryRunContext
from tests.integration.mysql.helpers import SMALL, Maria, backup_spec, contents, restore_spec, run_backup

pytestmark = pytest.mark.mariadb

ROWS = 20_000
DEAD_ROWS = 400_000  # what the killed load had inserted: its rollback takes seconds


def processlist(maria: Maria, conn_id: int) -> tuple[Any, ...] | None:
    conn = maria.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COMMAND, STATE, INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,))
            row = cur.fetchone()
            return tuple(row) if row else None
    finally:
        conn.close()


@pytest.fixture
def restored(maria: Maria, repo: Repository) -> Iterator[tuple[str, str, Any, dict[str, Any]]]:
    """A database of one table backed up and restored once under another name: (source, target,
    the restore's spec, the details its run recorded)."""
    shop, target = maria.db("shop"), maria.db("target")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(
        shop,
        "CREATE TABLE t (id INT PRIMARY KEY, pad CHAR(100) NOT NULL) ENGINE=InnoDB",
        f"INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_{ROWS}",
    )
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop]), "b1")
    spec = restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target})
    work = MysqlRestoreWork(RunInputs(spec, "r1", SMALL, repo=repo))
    ctx = MemoryRunContext(run_id="r1")
    details = work.prepare(ctx)
    work.run(ctx)
    yield shop, target, spec, details


def killed_load(maria: Maria, db: str) -> dict[str, int]:
    """What davitd's load does until a kill -9: its connection named (as the step records it),
    the table emptied and loaded in one transaction, a big INSERT in flight when the client's
    socket dies. Returns the connection as the step's cursor recorded it."""
    conn = maria.connect(db)
    conn.autocommit(False)
    cur = conn.cursor()
    loading = rollbackwait.identity(cur)
    cur.execute("START TRANSACTION")
    cur.execute("DELETE FROM t")
    cur.execute(f"INSERT INTO t SELECT seq + {ROWS}, MD5(seq) FROM seq_1_to_{DEAD_ROWS}")

    def in_flight() -> None:
        try:
            cur.execute(f"INSERT INTO t SELECT seq + {ROWS + DEAD_ROWS}, MD5(seq) FROM seq_1_to_{DEAD_ROWS}")
        except pymysql.err.OperationalError:  # its socket is gone: what the killed davitd never saw
            pass

    thread = threading.Thread(target=in_flight)
    thread.start()
    deadline = time.monotonic() + 60
    while not str((processlist(maria, loading["connection"]) or (None, None, ""))[2]).startswith("INSERT"):
        assert time.monotonic() < deadline, "the load's INSERT never showed running"
        time.sleep(0.02)
    sock = conn._sock  # (pymysql drops its reference once the read in flight fails)
    sock.shutdown(socket.SHUT_RDWR)  # the client vanishes, as with kill -9: no COM_QUIT
    thread.join()
    sock.close()
    return loading


def resumed(spec: Any, repo: Repository, details: dict[str, Any], target: str, loading: dict[str, int]) -> Any:
    """The restore as davitd resumes it: its schema step done, the table's step in flight with
    the killed load's connection in its cursor."""
    step = "data:" + qualified(target, "t")
    ctx = MemoryRunContext(run_id="r1", done={f"schema:{target}"}, cursors={step: {"count": None, "loading": loading}})
    return MysqlRestoreWork(RunInputs(spec, "r1", SMALL, details, repo=repo)), ctx, step


def test_a_resumed_table_load_waits_for_the_killed_loads_rollback_and_loads_once_without_a_lock_wait_error(
    maria: Maria,
    repo: Repository,
    restored: tuple[str, str, Any, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shop, target, spec, details = restored
    # a server that gives up on a row lock after 1 s: a DELETE meeting the rollback fails (1205)
    monkeypatch.setattr(client, "SESSION_SETUP", client.SESSION_SETUP + ", innodb_lock_wait_timeout = 1")
    loading = killed_load(maria, target)
    work, ctx, step = resumed(spec, repo, details, target, loading)
    caplog.set_level(logging.INFO, logger="davit.mysql")

    work.run(ctx)  # one attempt: a lock-wait error would raise here (retryable MysqlUnreachable)
    summary = work.finish(ctx)

    waits = [r.getMessage() for r in caplog.records if "interrupted load" in r.getMessage()]
    assert len(waits) == 2, waits
    assert f"waiting for connection {loading['connection']} of the interrupted load" in waits[0]
    assert "gone after" in waits[1]
    assert processlist(maria, loading["connection"]) is None
    assert summary["rows"] == ROWS and ctx.cursors[step]["count"] == ROWS
    assert contents(maria, target) == contents(maria, shop)


def test_a_load_recorded_on_an_earlier_server_start_is_not_waited_for_even_if_its_id_is_in_use(
    maria: Maria,
    repo: Repository,
    restored: tuple[str, str, Any, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shop, target, spec, details = restored
    other = maria.connect()  # a connection that took the id after a restart: idle, holding nothing
    try:
        with other.cursor() as cur:
            now = rollbackwait.identity(cur)
        earlier = {"connection": now["connection"], "server_started": now["server_started"] - 3600}
        work, ctx, step = resumed(spec, repo, details, target, earlier)
        monkeypatch.setattr(rollbackwait, "PATIENCE_SECONDS", 1.0)  # a wait for it would fail the run
        caplog.set_level(logging.INFO, logger="davit.mysql")
        work.run(ctx)
    finally:
        other.close()
    assert not [r for r in caplog.records if "interrupted load" in r.getMessage()]
    assert work.finish(ctx)["rows"] == ROWS
    [named] = [c["cursor"]["loading"] for c in ctx.checkpoints if c["step"] == step and "loading" in c["cursor"]]
    assert named["connection"] != now["connection"]  # the resumed load named its own connection
    assert contents(maria, target) == contents(maria, shop)

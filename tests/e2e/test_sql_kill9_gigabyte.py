"""`kill -9` of davitd in the middle of a backup and then of a restore of a ~1 GB database, as
an operator's would be: PostgreSQL `pgbench -i -s 70` (7 million accounts) and MariaDB four
sysbench-like tables of 300,000 rows (each ~1 KB: sysbench's columns and a 750-character
`body`; ~300 MB of data a table on the server). After each restart the same run completes; the
restored tables have the source's row counts and content (an order-free sum of every row's hash,
every key once), so nothing was loaded twice or lost. Marked `gigabyte` (minutes each:
run by `make test`, left out locally with `-m "not gigabyte"`); the size can be lowered with
DAVIT_KILL9_PGBENCH_SCALE / DAVIT_KILL9_MARIADB_ROWS for a quick look, never in CI."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_mysql_kill9 import connect as maria_connect
from tests.e2e.test_mysql_kill9 import kill_after_checkpoints, password_file, server, steps
from tests.e2e.test_postgres_kill9 import backup_job, connect, copying, drop, events_of, restore_job, run_of
from tests.peers.state import MariadbPeer, PostgresPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.gigabyte, pytest.mark.timeout(3600)]

SCALE = int(os.environ.get("DAVIT_KILL9_PGBENCH_SCALE", "70"))  # 100,000 accounts each: ~1 GB at 70
MARIA_TABLES, MARIA_ROWS = (
    ("sbtest1", "sbtest2", "sbtest3", "sbtest4"),
    int(os.environ.get("DAVIT_KILL9_MARIADB_ROWS", "300000")),
)
# A row's `body`: 24 distinct MD5s (hex, as compressible as sysbench's c and pad), cut to 750
# characters. The gigabyte is made of ~1 KB rows rather than sysbench's ~250 B: a quarter of the
# rows for the same bytes, so the run spends less on per-row costs (InnoDB's inserts and their
# `k` index entries, the driver's row parsing) that say nothing more about a kill's resumption.
BODY = "LEFT(CONCAT(" + ", ".join(f"MD5(seq * 31 + {j})" for j in range(24)) + "), 750)"
MARIA_WORKERS = 2  # connections generating or checksumming tables at once: the machine's two cores
CONFIG = "[data_path]\npack_size_mib = 8\ncheckpoint_seconds = 1\n"
# pgbench_accounts compresses ~10x (its filler is blanks) and on a quiet machine is read in ~3 s:
# a pack sealed per MiB stored gives its table step dozens of checkpoints to kill between
PG_CONFIG = "[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 1\n"
PG_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers")
# Order-free: count, distinct keys, and the sum of a 64-bit hash of every row's text.
PG_DIGEST = "SELECT count(*), count(DISTINCT {key}), sum(hashtextextended(t::text, 0)::numeric) FROM {table} t"
KEYS = {"pgbench_accounts": "aid", "pgbench_branches": "bid", "pgbench_tellers": "tid"}


def pg_digest(peer: PostgresPeer, db: str) -> dict[str, tuple[Any, ...]]:
    out = {}
    with connect(peer, db) as conn:
        for table in PG_TABLES:
            query = sql.SQL(PG_DIGEST).format(key=sql.Identifier(KEYS[table]), table=sql.Identifier(table))
            out[table] = tuple(conn.execute(query).fetchone())  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def pgbench_db(postgres_peer: PostgresPeer) -> Iterator[tuple[str, dict[str, tuple[Any, ...]]]]:
    db = f"pgbench_{uuid.uuid4().hex[:8]}"
    with connect(postgres_peer) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    env = {**os.environ, "PGHOST": postgres_peer.host, "PGPORT": str(postgres_peer.port), "PGUSER": postgres_peer.user}
    env["PGPASSWORD"] = postgres_peer.password  # the environment of a test's own child, not argv
    try:
        subprocess.run(["pgbench", "-i", "-q", "-I", "dtGvp", "-s", str(SCALE), db], env=env, check=True, capture_output=True)
        yield db, pg_digest(postgres_peer, db)
    finally:
        drop(postgres_peer, db)


def test_postgres_gigabyte_backup_and_restore_each_killed_mid_table_resume_to_identical_tables(
    davit: Davit, pgbench_db: tuple[str, dict[str, tuple[Any, ...]]], postgres_peer: PostgresPeer
) -> None:
    db, expected = pgbench_db
    target = f"copy_{uuid.uuid4().hex[:8]}"
    davit.configure(PG_CONFIG)
    davit.start()
    write_job(davit, "big.toml", backup_job("big", db, postgres_peer))
    step = f"table:{db}.public.pgbench_accounts"

    def inside_accounts() -> bool:
        rid = run_of(davit, "big")
        partial = [c for c in events_of(davit, rid, "CheckpointRecorded") if c["step"] == step] if rid else []
        # a table done before the kill point came would make the wait hang: fail at once instead
        assert not any(c["cursor"].get("done") for c in partial), "pgbench_accounts finished before 2 checkpoints"
        return len(partial) >= 2

    davit.wait_for(inside_accounts, 900, "three checkpoints inside pgbench_accounts", poll=0.05)
    davit.kill9()
    run_id = run_of(davit, "big")
    assert run_id is not None
    assert not [c for c in events_of(davit, run_id, "StepCompleted") if c["step"] == step], "the kill must land inside it"
    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=1800)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    written = [c for cp in events_of(davit, run_id, "CheckpointRecorded") for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"

    try:
        write_job(davit, "back.toml", restore_job("back", "big", db, target, postgres_peer))
        rows = SCALE * 100_000
        davit.wait_for(lambda: copying(postgres_peer, target, "COPY FROM") > rows // 4, 900, "COPY into accounts", poll=0.05)
        davit.kill9()
        restore_id = run_of(davit, "back")
        assert restore_id is not None
        davit.start()
        restored = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=1800)
        assert restored["state"] == "succeeded", restored
        assert restored["run_id"] == restore_id and restored["interruptions"] == 1
        assert pg_digest(postgres_peer, target) == expected
        assert expected["pgbench_accounts"][:2] == (rows, rows)
    finally:
        drop(postgres_peer, target)


def maria_fingerprint(peer: MariadbPeer, db: str) -> dict[str, tuple[int, int, int]]:
    """Each table's (rows, distinct keys, CHECKSUM TABLE), the tables read in parallel."""

    def one(table: str) -> tuple[int, int, int]:
        conn = maria_connect(peer, db)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM `{table}`")
                count, distinct = cur.fetchone()
                cur.execute(f"CHECKSUM TABLE `{table}`")
                return int(count), int(distinct), int(cur.fetchone()[1])
        finally:
            conn.close()

    with ThreadPoolExecutor(MARIA_WORKERS) as pool:
        return dict(zip(MARIA_TABLES, pool.map(one, MARIA_TABLES), strict=True))


def maria_fill(peer: MariadbPeer, db: str, n: int, table: str) -> None:
    """One sysbench-like table with a `body` column, generated by the server (Sequence engine).
    Measured (4 sysbench tables of 300,000 rows, paired, load 4-5): two such connections at once
    took 0.67x the time of one after the other; a bulk-load transaction (unique/foreign key checks
    off) was slower (1.18x)."""
    conn = maria_connect(peer, db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE `{table}` (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL,"
                " body VARCHAR(750) NOT NULL, KEY k (k)) ENGINE=InnoDB"
            )
            cur.execute(
                f"INSERT INTO `{table}` SELECT seq, (seq * 7919 + {n}) % 1000003, "
                "LEFT(CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2), MD5(seq + 3)), 120), "
                f"LEFT(CONCAT(MD5(seq * 3), MD5(seq * 5)), 60), {BODY} FROM seq_1_to_{MARIA_ROWS}"
            )
    finally:
        conn.close()


def inserting(peer: MariadbPeer, db: str) -> bool:
    """Whether a connection on database `db` is running an INSERT (a restore's table load). Rows
    an open transaction wrote are not counted where they would show: InnoDB's insert into an
    empty table (which the restore keeps, see mysql/restore.py) leaves `trx_rows_modified` 0."""
    conn = maria_connect(peer)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND INFO LIKE 'INSERT%%'", (db,))
            return int(cur.fetchone()[0]) > 0
    finally:
        conn.close()


def loading_for(peer: MariadbPeer, db: str, seconds: float) -> Callable[[], bool]:
    """A condition that holds once loads into `db` have been seen inserting for `seconds` (a
    table takes a minute or more: the kill lands well inside one)."""
    first: list[float] = []

    def held() -> bool:
        if not inserting(peer, db):
            return False
        first[:] = first or [time.monotonic()]
        return time.monotonic() - first[0] >= seconds

    return held


@pytest.fixture(scope="module")
def sysbench_db(mariadb_peer: MariadbPeer) -> Iterator[tuple[str, dict[str, tuple[int, int, int]]]]:
    """sysbench's table shape: k, c (120 characters), pad (60), and a body (750): about 1 KB a
    row on disk, ~1.2 GB in all."""
    db = f"sb_{uuid.uuid4().hex[:8]}"
    conn = maria_connect(mariadb_peer)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db}`")
        with ThreadPoolExecutor(MARIA_WORKERS) as pool:  # a table per connection
            list(pool.map(lambda n: maria_fill(mariadb_peer, db, n, MARIA_TABLES[n]), range(len(MARIA_TABLES))))
        yield db, maria_fingerprint(mariadb_peer, db)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        conn.close()


def test_mariadb_gigabyte_backup_and_restore_each_killed_mid_table_resume_to_identical_tables(
    davit: Davit, sysbench_db: tuple[str, dict[str, tuple[int, int, int]]], tmp_path: Path, mariadb_peer: MariadbPeer
) -> None:
    db, expected = sysbench_db
    pw = password_file(tmp_path, mariadb_peer)
    davit.configure(CONFIG)
    davit.start()
    write_job(
        davit, "big.toml", f'name = "big"\nkind = "mysql.backup"\n[source]\n{server(mariadb_peer, pw)}databases = ["{db}"]\n'
    )
    run_id = kill_after_checkpoints(davit, "big", 3)
    assert davit.runs("big")[-1]["state"] == "running", "the kill must land in the middle of the backup"
    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=1800)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    [snap] = davit.json_lines("snapshots", "--job", "big")
    assert snap["stats"]["rows"] == len(MARIA_TABLES) * MARIA_ROWS

    target = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        write_job(
            davit,
            "back.toml",
            f'name = "back"\nkind = "mysql.restore"\n[source]\njob = "big"\n'
            f'[target]\n{server(mariadb_peer, pw)}rename = {{ "{db}" = "{target}" }}\n',
        )
        # killed early in the first tables' loads (seconds into a minute-long load): a restore of
        # the whole gigabyte after the restart, and the killed loads' rollbacks to wait for
        davit.wait_for(loading_for(mariadb_peer, target, 5.0), 900, "rows loading", poll=0.1)
        davit.kill9()
        restore_id = run_of(davit, "back")
        assert restore_id is not None
        in_flight = steps(davit, restore_id, "StepStarted") - steps(davit, restore_id, "StepCompleted")
        assert any(step.startswith("data:") for step in in_flight), "the kill must land while a table loads"
        davit.start()
        restored = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=1800)
        assert restored["state"] == "succeeded", restored
        assert restored["run_id"] == restore_id and restored["interruptions"] == 1
        # the resumed loads waited for the killed ones' rollbacks, not through lock-wait failures
        assert not davit.events(f"stream = 'run-{restore_id}' AND type = 'RunWaitingRetry'")
        assert maria_fingerprint(mariadb_peer, target) == expected
    finally:
        conn = maria_connect(mariadb_peer)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{target}`")
        conn.close()

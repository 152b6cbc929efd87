"""`kill -9` of davitd in the middle of a mysql.backup and of a mysql.restore of a MariaDB
database of five tables (200,000 rows of about 300 bytes, and a table without a key): after a
restart the run completes, every table's row count and `CHECKSUM TABLE` match the source, and
no row is there twice (the keyless table would show a doubled load)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.peers.state import MariadbPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.mariadb]

TABLES, ROWS = ("t1", "t2", "t3", "t4"), 50_000
KEYLESS_ROWS = 20_000
CONFIG = "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.2\n"


def connect(peer: MariadbPeer, db: str | None = None) -> Any:
    return pymysql.connect(host=peer.host, port=peer.port, user=peer.user, password=peer.password, database=db, autocommit=True)


def fingerprint(peer: MariadbPeer, db: str) -> dict[str, tuple[int, int]]:
    """Each table's (row count, CHECKSUM TABLE)."""
    conn = connect(peer, db)
    out = {}
    try:
        with conn.cursor() as cur:
            for table in (*TABLES, "keyless"):
                cur.execute(f"SELECT COUNT(*) FROM `{table}`")
                count = int(cur.fetchone()[0])
                cur.execute(f"CHECKSUM TABLE `{table}`")
                out[table] = (count, int(cur.fetchone()[1]))
    finally:
        conn.close()
    return out


@pytest.fixture(scope="module")
def big(mariadb_peer: MariadbPeer) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    db = f"big_{uuid.uuid4().hex[:8]}"
    conn = connect(mariadb_peer)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db}`")
            cur.execute(f"USE `{db}`")
            for table in TABLES:
                cur.execute(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, n BIGINT, name VARCHAR(40), pad TEXT) ENGINE=InnoDB")
                cur.execute(
                    f"INSERT INTO `{table}` SELECT seq, seq * 7, CONCAT('item ', seq), REPEAT(MD5(seq), 8) FROM seq_1_to_{ROWS}"
                )
            cur.execute("CREATE TABLE keyless (n INT, label VARCHAR(20)) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO keyless SELECT seq, CONCAT('row ', seq) FROM seq_1_to_{KEYLESS_ROWS}")
        yield db, fingerprint(mariadb_peer, db)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        conn.close()


def checkpoints(davit: Davit, run_id: str) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")]


def steps(davit: Davit, run_id: str, kind: str) -> set[str]:
    return {str(e[3]["step"]) for e in davit.events(f"stream = 'run-{run_id}' AND type = '{kind}'")}


def kill_after_checkpoints(davit: Davit, job: str, count: int) -> str:
    def run_id() -> str | None:
        runs = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
        return str(runs[-1][3]["run_id"]) if runs else None

    def enough() -> bool:
        rid = run_id()
        return rid is not None and len([c for c in checkpoints(davit, rid) if c["items_done"] > 0]) >= count

    davit.wait_for(enough, 300, f"{count} checkpoints of {job}", poll=0.01)
    davit.kill9()
    rid = run_id()
    assert rid is not None
    return rid


def password_file(tmp_path: Path, peer: MariadbPeer) -> Path:
    path = tmp_path / "mariadb.password"
    path.write_text(peer.password)
    path.chmod(0o600)
    return path


def server(peer: MariadbPeer, pw: Path) -> str:
    return f'host = "{peer.host}"\nport = {peer.port}\nuser = "{peer.user}"\npassword_file = "{pw}"\n'


def backup_job(db: str, peer: MariadbPeer, pw: Path) -> str:
    return f'name = "big"\nkind = "mysql.backup"\nchunk_kib = 64\n[source]\n{server(peer, pw)}databases = ["{db}"]\n'


def test_backup_killed_mid_table_resumes_and_restores_every_row_once(
    davit: Davit, big: tuple[str, dict[str, tuple[int, int]]], tmp_path: Path, mariadb_peer: MariadbPeer
) -> None:
    db, expected = big
    pw = password_file(tmp_path, mariadb_peer)
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", backup_job(db, mariadb_peer, pw))
    run_id = kill_after_checkpoints(davit, "big", 3)
    assert davit.runs("big")[-1]["state"] == "running", "the kill must land in the middle of the backup"

    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=600)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    [snap] = davit.json_lines("snapshots", "--job", "big")
    assert snap["stats"]["rows"] == len(TABLES) * ROWS + KEYLESS_ROWS
    assert "0 problems" in davit.cli("verify", run_id, timeout=600).stdout

    target = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        write_job(
            davit,
            "back.toml",
            f'name = "back"\nkind = "mysql.restore"\n[source]\njob = "big"\n'
            f'[target]\n{server(mariadb_peer, pw)}rename = {{ "{db}" = "{target}" }}\n',
        )
        restore_id = kill_after_checkpoints(davit, "back", 1)
        assert davit.runs("back")[-1]["state"] == "running", "the kill must land in the middle of the restore"
        in_flight = steps(davit, restore_id, "StepStarted") - steps(davit, restore_id, "StepCompleted")
        assert any(step.startswith("data:") for step in in_flight), "the kill must land while a table loads"

        davit.start()
        run = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=600)
        assert run["state"] == "succeeded", run
        assert run["run_id"] == restore_id and run["interruptions"] == 1
        # the resumed load waited for the killed one's rollback instead of failing on its locks
        assert not davit.events(f"stream = 'run-{restore_id}' AND type = 'RunWaitingRetry'")
        assert fingerprint(mariadb_peer, target) == expected
    finally:
        conn = connect(mariadb_peer)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{target}`")
        conn.close()

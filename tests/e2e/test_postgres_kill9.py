"""`kill -9` of davitd in the middle of a postgres.backup and of a postgres.restore of a table of
600,000 rows (about 80 MB as COPY text): after a restart the run completes, and the restored
table has the same count and the same content (md5 of every row in key order), nothing twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import Davit, write_job
from tests.peers.state import PostgresPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

ROWS = 600_000
CONFIG = "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.5\n"
FILL = f"""
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, pad text, at timestamptz);
INSERT INTO items SELECT i, 'item ' || i, md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text),
  timestamptz '2024-01-01' + i * interval '1 second' FROM generate_series(1, {ROWS}) i;
CREATE TABLE small (id serial PRIMARY KEY, note text);
INSERT INTO small (note) SELECT 'note ' || i FROM generate_series(1, 100) i;
ANALYZE items;
"""
DIGEST = "SELECT count(*), count(DISTINCT id), md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM {} t"


def connect(peer: PostgresPeer, db: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname=db, autocommit=True)


def digest(peer: PostgresPeer, db: str, table: str) -> tuple[Any, ...]:
    with connect(peer, db) as conn:
        return tuple(conn.execute(sql.SQL(DIGEST).format(sql.Identifier(table))).fetchone())  # type: ignore[arg-type]


def drop(peer: PostgresPeer, db: str) -> None:
    with connect(peer) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


@pytest.fixture(scope="module")
def big(postgres_peer: PostgresPeer) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """A database whose table `items` is big enough for a kill to land inside it; (db, digest)."""
    db = f"big_{uuid.uuid4().hex[:8]}"
    with connect(postgres_peer) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with connect(postgres_peer, db) as conn:
        conn.execute(FILL)
    yield db, digest(postgres_peer, db, "items")
    drop(postgres_peer, db)


def backup_job(name: str, db: str, peer: PostgresPeer) -> str:
    return (
        f'name = "{name}"\nkind = "postgres.backup"\nparallel = 2\n[source]\nhost = "{peer.host}"\nport = {peer.port}\n'
        f'user = "{peer.user}"\npassword_file = "{peer.password_file}"\ndatabases = ["{db}"]\n'
    )


def restore_job(name: str, source_job: str, db: str, target: str, peer: PostgresPeer) -> str:
    return (
        f'name = "{name}"\nkind = "postgres.restore"\n[source]\njob = "{source_job}"\n[target]\nhost = "{peer.host}"\n'
        f'port = {peer.port}\nuser = "{peer.user}"\npassword_file = "{peer.password_file}"\n'
        f'rename = {{"{db}" = "{target}"}}\n'
    )


def run_of(davit: Davit, job: str) -> str | None:
    runs = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
    return str(runs[-1][3]["run_id"]) if runs else None


def events_of(davit: Davit, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = '{kind}'")]


def copying(peer: PostgresPeer, db: str, command: str) -> int:
    """Rows the server has moved so far in a COPY of `command` ('COPY TO' / 'COPY FROM') in `db`."""
    with connect(peer) as conn:
        row = conn.execute(
            "SELECT max(tuples_processed) FROM pg_stat_progress_copy WHERE datname = %s AND command = %s", (db, command)
        ).fetchone()
    return int(row[0] or 0) if row else 0


def test_backup_killed_inside_a_table_resumes_and_the_snapshot_restores_identical(
    davit: Davit, big: tuple[str, tuple[Any, ...]], postgres_peer: PostgresPeer
) -> None:
    db, expected = big
    target = f"copy_{uuid.uuid4().hex[:8]}"
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", backup_job("big", db, postgres_peer))
    step = f"table:{db}.public.items"

    def inside_the_table() -> bool:
        rid = run_of(davit, "big")
        partial = [c for c in events_of(davit, rid, "CheckpointRecorded") if c["step"] == step] if rid else []
        return len(partial) >= 2 and not any(c["cursor"].get("done") for c in partial)

    davit.wait_for(inside_the_table, 300, "two checkpoints inside table items", poll=0.01)
    davit.kill9()
    run_id = run_of(davit, "big")
    assert run_id is not None
    assert not [c for c in events_of(davit, run_id, "StepCompleted") if c["step"] == step], "the kill must land inside items"

    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=600)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    written = [c for cp in events_of(davit, run_id, "CheckpointRecorded") for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    # progress rode on the checkpoints: the catalog's estimate of the rows, and the rows read
    table = [c for c in events_of(davit, run_id, "CheckpointRecorded") if c["step"] == step]
    assert all(c["items_done"] > 0 and ROWS // 2 <= c["items_total"] <= ROWS * 2 for c in table)
    assert table[-1]["cursor"].get("done") and table[-1]["items_done"] == ROWS
    [snap] = davit.json_lines("snapshots", "--job", "big")
    assert snap["stats"]["rows"] == ROWS + 100
    assert "0 problems" in davit.cli("verify", run_id, timeout=600).stdout

    try:
        write_job(davit, "back.toml", restore_job("back", "big", db, target, postgres_peer))
        restored = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=600)
        assert restored["state"] == "succeeded", restored
        assert digest(postgres_peer, target, "items") == expected
        assert digest(postgres_peer, target, "small")[:2] == (100, 100)
    finally:
        drop(postgres_peer, target)


def test_restore_killed_inside_a_table_reloads_that_table_once(
    davit: Davit, big: tuple[str, tuple[Any, ...]], postgres_peer: PostgresPeer
) -> None:
    db, expected = big
    target = f"copy_{uuid.uuid4().hex[:8]}"
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", backup_job("big", db, postgres_peer))
    assert davit.wait_run_state("big", {"succeeded", "failed"}, timeout=600)["state"] == "succeeded"
    step = f"table:{target}.public.items"
    try:
        write_job(davit, "back.toml", restore_job("back", "big", db, target, postgres_peer))
        # the restore loads a table in one COPY inside one transaction: the server's progress
        # view says when the kill lands inside it
        davit.wait_for(lambda: copying(postgres_peer, target, "COPY FROM") > ROWS // 10, 300, "COPY into items", poll=0.01)
        davit.kill9()
        run_id = run_of(davit, "back")
        assert run_id is not None
        assert not [c for c in events_of(davit, run_id, "StepCompleted") if c["step"] == step]

        davit.start()
        run = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=600)
        assert run["state"] == "succeeded", run
        assert run["run_id"] == run_id and run["interruptions"] == 1
        assert len([s for s in events_of(davit, run_id, "StepStarted") if s["step"] == step]) == 2, "items loaded again"
        [loaded] = [c for c in events_of(davit, run_id, "CheckpointRecorded") if c["step"] == step]
        assert loaded["items_done"] == loaded["items_total"] == ROWS  # the snapshot's own count
        assert digest(postgres_peer, target, "items") == expected  # same count, every id once, same content
        assert digest(postgres_peer, target, "small")[:2] == (100, 100)
    finally:
        drop(postgres_peer, target)

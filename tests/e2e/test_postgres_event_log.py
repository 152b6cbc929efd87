"""davitd and the CLI on an event log in PostgreSQL (`[daemon] event_store_url_file`): a files
backup runs, `davit runs`, `history` and `log verify` read it from the database, nothing is
written to `state/davit.db`, and the URL's password appears in no output."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import Davit, write_job
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.e2e


def _admin(peer: PostgresPeer) -> psycopg.Connection:
    return psycopg.connect(
        host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname="postgres", autocommit=True
    )


@pytest.fixture
def log_database(postgres_peer: PostgresPeer) -> Iterator[str]:
    name = f"davit_e2e_{uuid.uuid4().hex[:12]}"
    with _admin(postgres_peer) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with _admin(postgres_peer) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _on_postgres(davit: Davit, url: str) -> None:
    davit.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(davit.home / "event-store.url", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    davit.configure('[daemon]\nevent_store_url_file = "event-store.url"\n')


def test_a_files_backup_on_a_postgresql_log_shows_in_runs_history_and_verifies(
    davit: Davit, postgres_peer: PostgresPeer, log_database: str, tmp_path: Path
) -> None:
    password = postgres_peer.password
    _on_postgres(davit, f"postgresql://{postgres_peer.user}:{password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}")
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("on a shared log\n")
    (source / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    davit.start()
    write_job(davit, "docs.toml", f'name = "docs"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    run = davit.wait_run_state("docs", {"succeeded", "failed"}, timeout=60)
    assert run["state"] == "succeeded", run
    assert [r["run_id"] for r in davit.runs("docs")] == [run["run_id"]]
    types = [e["type"] for e in davit.history()]
    assert "JobDefined" in types and "RunSucceeded" in types
    verify = davit.cli("log", "verify")
    assert "log ok" in verify.stdout and "NOT keyed (PostgreSQL" in verify.stdout
    assert davit.stop() == 0
    assert not (davit.home / "state" / "davit.db").exists()
    assert not (davit.home / "log.key").exists()
    with psycopg.connect(
        host=postgres_peer.host, port=postgres_peer.port, user=postgres_peer.user, password=password, dbname=log_database
    ) as conn:
        row = conn.execute("SELECT count(*), max(position) FROM events WHERE type = 'RunSucceeded'").fetchone()
    assert row is not None and row[0] == 1
    outputs = [p.read_text() for p in davit.logs] + [verify.stdout, verify.stderr, davit.cli("status", check=False).stdout]
    assert not any(password in text for text in outputs)


def test_a_bad_event_store_url_file_is_named_and_its_password_never_shown(davit: Davit) -> None:
    _on_postgres(davit, "mysql://admin:s3cret-pw@127.0.0.1:1/x")
    result = davit.cli("runs", check=False)
    assert result.returncode != 0
    assert "event-store.url" in result.stderr and "postgresql://" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr

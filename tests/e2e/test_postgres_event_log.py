"""davitd and the CLI on an event log in PostgreSQL (`[daemon] event_store_url_file`): a files
backup runs, `davit runs`, `history` and `log verify` read it from the database, nothing is
written to `state/davit.db`, and the URL's password appears in no output. The log is keyed
under davitd's log key as on SQLite; a second davitd on it needs the one key."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from davit.eventstore.logkey import read_log_key
from davit.eventstore.schema import GENESIS_HASH
from tests.e2e.conftest import BIN, Davit, write_job
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
    assert "log ok" in verify.stdout and f"keyed from position 1 with {davit.home / 'log.key'}" in verify.stdout
    assert davit.stop() == 0
    assert not (davit.home / "state" / "davit.db").exists()
    assert stat.S_IMODE((davit.home / "log.key").stat().st_mode) == 0o400
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


def test_a_second_davitd_on_a_keyed_postgresql_log_starts_only_with_the_one_key(
    davit: Davit, postgres_peer: PostgresPeer, log_database: str, tmp_path: Path
) -> None:
    """Several davitd share one log and so its key: one whose config names no copy of it makes
    no key of its own for a keyed log (appending under another key would break the chain) and
    refuses to start naming its key path; named with `[daemon] log_key_file`, it starts and
    links its events with the key, and the whole log verifies with it from either home."""
    url = f"postgresql://{postgres_peer.user}:{postgres_peer.password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}"
    _on_postgres(davit, url)
    davit.start()
    second = Davit(tmp_path / "home-b")
    _on_postgres(second, url)
    second.configure('[daemon]\nname = "e-pgkey-b"\nevent_store_url_file = "event-store.url"\n')
    refused = subprocess.run([str(BIN / "davitd"), "--home", str(second.home)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"its key {second.home / 'log.key'} is missing" in refused.stdout + refused.stderr
    assert not (second.home / "log.key").exists()
    second.configure(
        f'[daemon]\nname = "e-pgkey-b"\nevent_store_url_file = "event-store.url"\nlog_key_file = "{davit.home / "log.key"}"\n'
    )
    try:
        second.start()
        assert davit.stop() == 0  # (the second davitd appends on alone, under the key)
        for home in (davit, second):
            verify = home.cli("log", "verify")
            assert f"keyed from position 1 with {davit.home / 'log.key'}" in verify.stdout, verify.stdout
    finally:
        if second.proc is not None and second.proc.poll() is None:
            assert second.stop() == 0
    with psycopg.connect(
        host=postgres_peer.host,
        port=postgres_peer.port,
        user=postgres_peer.user,
        password=postgres_peer.password,
        dbname=log_database,
    ) as conn:
        markers = conn.execute("SELECT count(*) FROM events WHERE type = 'LogKeyed'").fetchone()
    assert markers is not None and markers[0] == 1


def test_make_log_key_on_a_postgresql_log_makes_the_key_seals_the_log_and_marks_the_key(
    davit: Davit, postgres_peer: PostgresPeer, log_database: str
) -> None:
    """`davitd --make-log-key` (systemd's ExecStartPre=+) on PostgreSQL as on SQLite: it used to
    say "no log key" and leave the log plain."""
    url = f"postgresql://{postgres_peer.user}:{postgres_peer.password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}"
    _on_postgres(davit, url)
    made = subprocess.run(
        [str(BIN / "davitd"), "--home", str(davit.home), "--make-log-key"], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0 and f"log key {davit.home / 'log.key'}" in made.stdout, made.stdout + made.stderr
    key = read_log_key(davit.home / "log.key")
    assert key is not None and key.seal_done and key.sealed == (0, GENESIS_HASH)
    verify = davit.cli("log", "verify")
    assert f"log ok: 1 events, hash chain intact, keyed from position 1 with {davit.home / 'log.key'}" in verify.stdout

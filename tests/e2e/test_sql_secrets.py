"""The SQL kinds through the daemon keep their passwords to themselves: a postgres.backup and a
mysql.backup that succeed with the peers' real passwords (read from `password_file`), and one
of each with a wrong password for the peers' admin user, which fails at once (permanent, never
retried) naming the user and the server. The passwords, right or wrong, appear nowhere: not in
the event log, the daemon's log, nor any `--json` output. A server that is down is retried
with backoff (bounded by `[retry]`), then the run fails naming the server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.peers.state import MariadbPeer, PostgresPeer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.mariadb]

WRONG = "pw-Never-In-Output-19"
CONFIG = "[retry]\nmax_attempts = 3\ninitial_seconds = 1\nmax_seconds = 2\n"


@pytest.fixture
def databases(postgres_peer: PostgresPeer, mariadb_peer: MariadbPeer) -> Iterator[str]:
    """One small database of the same (unique) name on each peer, dropped after."""
    name = f"secrets_{uuid.uuid4().hex[:8]}"
    p = postgres_peer
    with psycopg.connect(host=p.host, port=p.port, user=p.user, password=p.password, dbname="postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host=p.host, port=p.port, user=p.user, password=p.password, dbname=name, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    m = mariadb_peer
    conn = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"CREATE TABLE `{name}`.t (id INT PRIMARY KEY, note TEXT)")
        cur.execute(f"INSERT INTO `{name}`.t VALUES (1, 'one'), (2, 'two')")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()
    with psycopg.connect(host=p.host, port=p.port, user=p.user, password=p.password, dbname="postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _job(name: str, kind: str, host: str, port: int, user: str, password_file: Path | str, db: str) -> str:
    return (
        f'name = "{name}"\nkind = "{kind}"\n[source]\nhost = "{host}"\nport = {port}\nuser = "{user}"\n'
        f'password_file = "{password_file}"\ndatabases = ["{db}"]\n'
    )


def test_sql_backups_right_and_wrong_passwords_never_show_them(
    davit: Davit, postgres_peer: PostgresPeer, mariadb_peer: MariadbPeer, databases: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text(WRONG)
    wrong.chmod(0o600)
    pg, maria = postgres_peer, mariadb_peer
    davit.configure(CONFIG)
    davit.start()
    jobs = {
        "pg-ok": _job("pg-ok", "postgres.backup", pg.host, pg.port, pg.user, pg.password_file, databases),
        "my-ok": _job("my-ok", "mysql.backup", maria.host, maria.port, maria.user, maria.password_file, databases),
        "pg-bad": _job("pg-bad", "postgres.backup", pg.host, pg.port, pg.user, wrong, databases),
        "my-bad": _job("my-bad", "mysql.backup", maria.host, maria.port, maria.user, wrong, databases),
    }
    for name, text in jobs.items():
        write_job(davit, f"{name}.toml", text)
    runs = {name: davit.wait_run_state(name, {"failed", "succeeded"}, timeout=300) for name in jobs}
    assert runs["pg-ok"]["state"] == "succeeded" and runs["my-ok"]["state"] == "succeeded", runs
    for name, server in (("pg-bad", pg), ("my-bad", maria)):
        run = runs[name]
        assert run["state"] == "failed", run
        history = davit.history(run["run_id"])
        types = [e["type"] for e in history]
        assert "RunWaitingRetry" not in types and types.count("RunFailed") == 1, types  # permanent: not retried
        failed = str(next(e for e in history if e["type"] == "RunFailed"))
        assert server.user in failed and f"{server.host}:{server.port}" in failed, failed

    outputs = [
        davit.cli("history", "--all", "--json").stdout,
        davit.cli("runs", "--json").stdout,
        davit.cli("jobs", "--json").stdout,
        davit.cli("snapshots", "--json").stdout,
        str(davit.events()),
    ]
    outputs += [davit.cli("show", run["run_id"], "--json").stdout for run in runs.values()]
    outputs += [log.read_text() for log in davit.logs]
    for text in outputs:
        for secret in (WRONG, pg.password, maria.password):
            assert secret not in text


def test_a_sql_server_that_is_down_is_retried_with_backoff_then_fails_naming_it(
    davit: Davit, tmp_path: Path, postgres_peer: PostgresPeer, mariadb_peer: MariadbPeer
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    secret = tmp_path / "down.password"
    secret.write_text(WRONG)
    secret.chmod(0o600)
    davit.configure("[retry]\nmax_attempts = 2\ninitial_seconds = 1\nmax_seconds = 2\n")
    davit.start()
    write_job(davit, "pg-down.toml", _job("pg-down", "postgres.backup", "127.0.0.1", port, "admin", secret, "shop"))
    write_job(davit, "my-down.toml", _job("my-down", "mysql.backup", "127.0.0.1", port, "admin", secret, "shop"))
    for name in ("pg-down", "my-down"):
        run = davit.wait_run_state(name, {"failed", "succeeded"}, timeout=300)
        assert run["state"] == "failed", run
        history = davit.history(run["run_id"])
        types = [e["type"] for e in history]
        assert types.count("RunWaitingRetry") == 1 and types.count("RunFailed") == 1, types  # retried once, then given up
        failed = str(next(e for e in history if e["type"] == "RunFailed"))
        assert f"127.0.0.1:{port}" in failed and WRONG not in failed, failed
    for text in [str(davit.events()), *(log.read_text() for log in davit.logs)]:
        assert WRONG not in text

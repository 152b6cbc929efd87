"""Smoke test: the PostgreSQL peer takes the admin password over TCP and refuses a wrong one."""

from __future__ import annotations

import psycopg
import pytest

from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.postgres


def test_admin_creates_a_database_and_reads_back_a_row(postgres_peer: PostgresPeer) -> None:
    admin = {"host": postgres_peer.host, "port": postgres_peer.port, "user": postgres_peer.user}
    with psycopg.connect(**admin, password=postgres_peer.password, dbname="postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS davit_smoke")
        conn.execute("CREATE DATABASE davit_smoke")
    try:
        with psycopg.connect(**admin, password=postgres_peer.password, dbname="davit_smoke") as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v jsonb)")
            conn.execute("INSERT INTO t VALUES (1, '{\"a\": [1, 2]}')")
            assert conn.execute("SELECT v FROM t").fetchone() == ({"a": [1, 2]},)
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("15")  # type: ignore[index]
    finally:
        with psycopg.connect(**admin, password=postgres_peer.password, dbname="postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE davit_smoke")


def test_a_wrong_password_is_refused(postgres_peer: PostgresPeer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=postgres_peer.host, port=postgres_peer.port, user=postgres_peer.user, password="wrong", dbname="postgres"
        )

"""Smoke test: the MariaDB peer accepts its admin user's password over TCP, stores and returns a row."""

from __future__ import annotations

import uuid

import pymysql
import pytest

from tests.peers.state import MariadbPeer

pytestmark = pytest.mark.mariadb


def test_admin_user_creates_a_database_and_reads_back(mariadb_peer: MariadbPeer) -> None:
    conn = pymysql.connect(
        host=mariadb_peer.host,
        port=mariadb_peer.port,
        user=mariadb_peer.user,
        password=mariadb_peer.password,
        charset="utf8mb4",
    )
    name = f"davit_smoke_{uuid.uuid4().hex[:8]}"
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"CREATE TABLE `{name}`.t (id INT PRIMARY KEY, s VARCHAR(20)) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO `{name}`.t VALUES (1, 'h\U0001f600llo')")
            cur.execute(f"SELECT id, s FROM `{name}`.t")
            assert cur.fetchall() == ((1, "h\U0001f600llo"),)
            cur.execute("SELECT VERSION()")
            assert "MariaDB" in cur.fetchone()[0]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def test_a_wrong_password_is_refused(mariadb_peer: MariadbPeer) -> None:
    with pytest.raises(pymysql.err.OperationalError) as caught:
        pymysql.connect(host=mariadb_peer.host, port=mariadb_peer.port, user=mariadb_peer.user, password="not-it")
    assert caught.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR

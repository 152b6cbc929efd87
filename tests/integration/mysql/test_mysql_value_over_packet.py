"""A single value larger than the target server's max_allowed_packet cannot be restored into it
in any way (the server caps every string it builds at that size): the restore fails with
ValueTooLarge naming the table and the max_allowed_packet to set, before anything of the row
is sent, and the table's load is rolled back (no row of it stays). Once the server's setting is
raised as the error says, the same snapshot restores whole. The target is a MariaDB server of
this test's own (started with a 1 MiB max_allowed_packet, torn down after), never the shared
peer's setting changed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from davit.adapters.mysql.pieces import ValueTooLarge
from davit.adapters.repository.repository import Repository
from davit.domain.jobs import job_from_dict
from tests.integration.mysql.helpers import Maria, backup_spec, run_backup, run_restore
from tests.peers import mariadb
from tests.peers.fixtures import from_entry
from tests.peers.state import MariadbPeer

pytestmark = pytest.mark.mariadb
PACKET = 1 << 20
VALUE = 2 << 20  # a 2 MiB blob: twice the target's packet


@pytest.fixture
def small_packet_server(mariadb_peer: MariadbPeer) -> Iterator[MariadbPeer]:
    base = Path(tempfile.mkdtemp(prefix="davit-s-gaps19-packet-"))
    base.rmdir()
    server = None
    try:
        entry, server = mariadb.start_instance(base, [f"--max-allowed-packet={PACKET}"])
        yield from_entry(MariadbPeer, entry)
    finally:
        if server is not None:
            mariadb.stop_instance(base, server)
        else:
            shutil.rmtree(base, ignore_errors=True)


def _connect(peer: MariadbPeer, db: str | None = None) -> Any:
    return pymysql.connect(host=peer.host, port=peer.port, user=peer.user, password=peer.password, database=db, autocommit=True)


def _answer(peer: MariadbPeer, db: str | None, statement: str) -> list[tuple[Any, ...]]:
    conn = _connect(peer, db)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _restore_into(peer: MariadbPeer, src: str, dst: str, **target: Any) -> Any:
    server = {"host": peer.host, "port": peer.port, "user": peer.user, "password_file": peer.password_file}
    spec = {
        "name": "r",
        "kind": "mysql.restore",
        "source": {"snapshot": "b1"},
        "target": {**server, "rename": {src: dst}, **target},
    }
    return job_from_dict(spec, "r.toml")


def test_a_value_over_the_targets_packet_fails_the_restore_naming_the_table_and_the_packet_to_set(
    maria: Maria, repo: Repository, small_packet_server: MariadbPeer
) -> None:
    src = maria.db("pkt_src")
    dst = f"pkt_dst_{maria.tag}"  # on the test's own server, thrown away with it
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(
        src,
        "CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)",
        "INSERT INTO t VALUES (1, 0x00)",
        f"INSERT INTO t VALUES (2, REPEAT(0x61, {VALUE}))",
        "INSERT INTO t VALUES (3, NULL)",
    )
    run_backup(repo, backup_spec("pkt", maria, databases=[src]), "b1")  # the peer's 16 MiB: no warning needed
    assert _answer(small_packet_server, None, "SELECT @@max_allowed_packet") == [(PACKET,)]

    with pytest.raises(ValueTooLarge) as failed:
        run_restore(repo, _restore_into(small_packet_server, src, dst), "r1")
    said = str(failed.value)
    assert said.startswith(f"{dst}.t: ") and "column 2" in said, said
    needed = -(-(VALUE + 1) // 1024) * 1024
    assert f"max_allowed_packet ({PACKET})" in said and f"max_allowed_packet to at least {needed}" in said, said
    assert small_packet_server.password not in said
    # the load was rolled back: not even the rows before the large one stayed
    assert _answer(small_packet_server, dst, "SELECT COUNT(*) FROM t") == [(0,)]

    # what the error says to do, done: the same snapshot restores whole
    _answer(small_packet_server, None, f"SET GLOBAL max_allowed_packet = {needed}")
    _, restored = run_restore(repo, _restore_into(small_packet_server, src, dst, if_exists="drop"), "r2")
    assert restored["rows"] == 3
    digest = "SELECT id, MD5(b), LENGTH(b) FROM t ORDER BY id"
    assert _answer(small_packet_server, dst, digest) == _answer_peer(maria, src, digest)


def _answer_peer(maria: Maria, db: str, statement: str) -> list[tuple[Any, ...]]:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()

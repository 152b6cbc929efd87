"""A SQL snapshot's tree crafted by whoever can write a plain repository (a huge line, JSON
nested a hundred thousand deep, names holding '/', '..' or NUL, a chunk id that is not one, a
negative count): `mysql.restore` and `postgres.restore` refuse it in `prepare`, naming the line
and the field, before anything is written to the target server (no database appears)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from davit.adapters.mysql.restore import MysqlRestoreWork
from davit.adapters.postgres.restore import PostgresRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.adapters.sqltree import TreeRefused
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.crafted_trees import store_chunk
from tests.integration.mysql.helpers import PASSWORD_ENV
from tests.peers.state import MariadbPeer, PostgresPeer

NESTED = b"[" * 100_000 + b"]" * 100_000
DEEP = json.loads("[" * 20 + "]" * 20)  # within what json parses, beyond what a tree line may nest


def publish(repo: Repository, kind: str, lines: list[dict[str, Any] | bytes]) -> str:
    raw = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    sid = uuid.uuid4().hex[:12]
    manifest = {"id": sid, "job": "crafted", "kind": kind, "run_id": sid, "created_at": "2026-01-01T00:00:00"}
    repo.publish_snapshot_from(manifest, io.BytesIO(raw))
    return sid


def maria_lines(repo: Repository, db: str) -> tuple[dict[str, Any], dict[str, Any]]:
    chunk = store_chunk(repo, b"INSERT INTO `t` (`id`) VALUES (1);")
    database = {"p": db, "t": "f", "m": 420, "mt": 0, "u": 0, "g": 0, "s": 0, "c": [], "mysql": "database", "db": db,
                "create": f"CREATE DATABASE `{db}`", "objects": []}  # fmt: skip
    table = {"p": f"{db}/t", "t": "f", "m": 420, "mt": 0, "u": 0, "g": 0, "s": 34, "c": [chunk], "mysql": "table", "db": db,
             "table": "t", "create": "CREATE TABLE `t` (`id` int PRIMARY KEY)", "engine": "InnoDB", "columns": ["id"],
             "data": True, "rows": 1}  # fmt: skip
    return database, table


Edit = Callable[[dict[str, Any], dict[str, Any]], list[dict[str, Any] | bytes]]
MARIA_CASES: dict[str, tuple[Edit, str]] = {
    "huge line": (lambda d, t: [d, {**t, "create": "x" * (65 << 20)}], "above the 64 MiB"),
    "nested JSON": (lambda d, t: [d, b'{"mysql": "table", "columns": ' + NESTED + b"}"], "nests deeper"),
    "nested objects": (lambda d, t: [{**d, "objects": [{"x": DEEP}]}, t], "nests deeper"),
    "table name with NUL": (lambda d, t: [d, {**t, "table": "t\x00x"}], "field 'table'"),
    "database named ..": (lambda d, t: [{**d, "db": ".."}, {**t, "db": ".."}], "field 'db'"),
    "database name with /": (lambda d, t: [{**d, "db": "a/../../b"}, {**t, "db": "a/../../b"}], "holds '/'"),
    "chunk id": (lambda d, t: [d, {**t, "c": ["../../etc/passwd"]}], "not a chunk id"),
    "negative rows": (lambda d, t: [d, {**t, "rows": -1}], "negative"),
    "rows as text": (lambda d, t: [d, {**t, "rows": "1; DROP DATABASE x"}], "not a int"),
    "object as text": (lambda d, t: [{**d, "objects": ["CREATE USER evil"]}, t], "field 'objects'"),
}


@pytest.mark.mariadb
@pytest.mark.parametrize("edit, reason", MARIA_CASES.values(), ids=MARIA_CASES.keys())
def test_a_crafted_mariadb_tree_is_refused_before_the_server_is_touched(
    mariadb_peer: MariadbPeer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, edit: Edit, reason: str
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mariadb_peer.password)
    repo = Repository.open(tmp_path / "repo")
    db = f"crafted_{uuid.uuid4().hex[:8]}"
    sid = publish(repo, "mysql", edit(*maria_lines(repo, db)))
    target = {"host": mariadb_peer.host, "port": mariadb_peer.port, "user": mariadb_peer.user, "password_env": PASSWORD_ENV}
    spec = {"name": "r", "kind": "mysql.restore", "source": {"snapshot": sid}, "target": {**target, "if_exists": "drop"}}
    work = MysqlRestoreWork(RunInputs(job_from_dict(spec, "r.toml"), "r1", repo=repo))
    with pytest.raises(TreeRefused, match="tree line") as caught:
        work.prepare(MemoryRunContext(run_id="r1"))
    assert reason in str(caught.value)
    import pymysql

    conn = pymysql.connect(host=mariadb_peer.host, port=mariadb_peer.port, user=mariadb_peer.user, password=mariadb_peer.password)
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'crafted%%'")
        assert cur.fetchone() == (0,)
    conn.close()


def pg_lines(repo: Repository, db: str) -> tuple[dict[str, Any], dict[str, Any]]:
    chunk = store_chunk(repo, b"1\n")
    schema = {"p": f"{db}/schema", "t": "f", "s": 2, "c": [chunk], "pg": {"kind": "schema", "db": db, "sequences": []}}
    table = {"p": f"{db}/table/public.t", "t": "f", "s": 2, "c": [chunk],
             "pg": {"kind": "table", "db": db, "schema": "public", "table": "t", "columns": ["id"], "rows": 1}}  # fmt: skip
    return schema, table


PG_CASES: dict[str, tuple[Edit, str]] = {
    "nested JSON": (lambda s, t: [s, b'{"pg": ' + NESTED + b"}"], "nests deeper"),
    "table name with NUL": (lambda s, t: [s, {**t, "pg": {**t["pg"], "table": "t\x00"}}], "field 'table'"),
    "schema named ..": (lambda s, t: [s, {**t, "pg": {**t["pg"], "schema": ".."}}], "field 'schema'"),
    "unknown unit": (lambda s, t: [s, {**t, "pg": {**t["pg"], "kind": "shell"}}], "field 'pg.kind'"),
    "chunk id": (lambda s, t: [s, {**t, "c": [123]}], "field 'c'"),
}


@pytest.mark.postgres
@pytest.mark.parametrize("edit, reason", PG_CASES.values(), ids=PG_CASES.keys())
def test_a_crafted_postgres_tree_is_refused_before_the_server_is_touched(
    postgres_peer: PostgresPeer, tmp_path: Any, edit: Edit, reason: str
) -> None:
    repo = Repository.open(tmp_path / "repo")
    db = f"crafted_{uuid.uuid4().hex[:8]}"
    sid = publish(repo, "postgres", edit(*pg_lines(repo, db)))
    p = postgres_peer
    target = {"host": p.host, "port": p.port, "user": p.user, "password_file": p.password_file, "if_exists": "drop"}
    spec = {"name": "r", "kind": "postgres.restore", "source": {"snapshot": sid}, "target": target}
    work = PostgresRestoreWork(RunInputs(job_from_dict(spec, "r.toml"), "r1", repo=repo))
    with pytest.raises(TreeRefused, match="tree line") as caught:
        work.prepare(MemoryRunContext(run_id="r1"))
    assert reason in str(caught.value)
    import psycopg

    with psycopg.connect(host=p.host, port=p.port, user=p.user, password=p.password, dbname="postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'crafted%'").fetchone() == (0,)

"""A table's rows read for a backup through `psql` joined to the run's exported snapshot
(`copyout.py`): the very bytes psycopg's COPY gave before (so a backup after the change stores
nothing new), the snapshot's rows and not rows committed after it, and a failure raised as a
classified error naming what was being read, never the password."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from davit.adapters.postgres import copyout
from davit.adapters.postgres.client import Server
from davit.domain.errors import DavitError
from davit.domain.jobs.postgres import PostgresServer
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture

pytestmark = pytest.mark.postgres

AWKWARD = """
CREATE TABLE notes (id int PRIMARY KEY, body text, raw bytea, tags text[], at timestamptz, span interval,
  f double precision, d date, n numeric);
INSERT INTO notes SELECT i, 'line ' || i || E'\\nsecond\\tline \\\\ back é ✓' || repeat('x', i % 300),
  decode(md5(i::text), 'hex'), ARRAY['a,b', NULL, E'q"uote'],
  '2024-02-29 23:59:59.123456+05:30'::timestamptz + i * interval '1 hour',
  make_interval(months => i, secs => i / 7.0), 1.0 / (i + 3), 'infinity', 1e30 / i
FROM generate_series(1, 20000) i;
INSERT INTO notes VALUES (0, NULL, NULL, NULL, NULL, NULL, 'NaN', '-infinity', NULL),
  (-1, '', '', '{}', 'epoch', '0', 0, NULL, 0);
"""
QUERY = sql.SQL("COPY public.notes (id, body, raw, tags, at, span, f, d, n) TO STDOUT")


def server(pg: Pg) -> Server:
    return Server(PostgresServer(**pg.server()), "postgres.backup test")


def make(pg: Pg, base: str, script: str) -> str:
    db = pg.name(base)
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with pg.connect(db) as conn:
        conn.execute(script)
    return db


def read(pg: Pg, db: str, conn: psycopg.Connection[Any], snapshot: str) -> bytes:
    text = copyout.script(conn, snapshot, QUERY)
    return b"".join(copyout.copy_blocks(server(pg), db, text, f"reading table {db}.public.notes"))


def test_psql_gives_the_bytes_psycopgs_copy_gave_at_the_snapshot_even_after_later_commits(pg: Pg) -> None:
    db = make(pg, "copyout", AWKWARD)
    with pg.connect(db, autocommit=False) as coordinator, pg.connect(db, autocommit=False) as conn:
        coordinator.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = str(coordinator.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        conn.execute("SET TIME ZONE 'Asia/Kolkata'")  # a setting that shapes COPY's text: psql must take it
        with conn.cursor() as cur, cur.copy(QUERY) as copy:
            expected = b"".join(bytes(block) for block in copy)
        with pg.connect(db) as writer:  # committed after the snapshot: not seen
            writer.execute("INSERT INTO notes (id, body) VALUES (99999, 'late')")
        got = read(pg, db, conn, snapshot)
    assert got == expected
    assert expected.count(b"\n") == 20002 and b"+05:30" in expected and b"late" not in got


def test_a_failing_copy_is_a_classified_error_naming_the_table_never_the_password(pg: Pg) -> None:
    db = make(pg, "copyout_err", "CREATE TABLE notes (id int)")
    with pg.connect(db, autocommit=False) as conn:
        text = copyout.script(conn, "00000003-00000002-1", QUERY)  # a snapshot that does not exist
    with pytest.raises(DavitError) as caught:
        b"".join(copyout.copy_blocks(server(pg), db, text, f"reading table {db}.public.notes"))
    message = str(caught.value)
    assert f"reading table {db}.public.notes" in message and "snapshot" in message
    assert pg.peer.password not in message

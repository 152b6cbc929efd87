"""A table's rows read for a backup through libpq directly (`copyout.py`, blocks of rows instead
of psycopg's one call per row): the same bytes psycopg's COPY gives, whole rows per block, a
server error raised as psycopg raises it, and the connection still in its transaction after."""

from __future__ import annotations

import psycopg
import pytest

from davit.adapters.postgres.copyout import copy_out
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture

pytestmark = pytest.mark.postgres

AWKWARD = """
CREATE TABLE notes (id int PRIMARY KEY, body text, raw bytea, tags text[]);
INSERT INTO notes SELECT i, 'line ' || i || E'\\nsecond\\tline \\\\ back' || repeat('x', i % 300),
  decode(md5(i::text), 'hex'), ARRAY['a,b', NULL, E'q"uote']
FROM generate_series(1, 20000) i;
INSERT INTO notes VALUES (0, NULL, NULL, NULL), (-1, '', '', '{}');
"""
QUERY = "COPY public.notes (id, body, raw, tags) TO STDOUT"


def test_rows_read_in_blocks_are_the_bytes_psycopgs_copy_gives(pg: Pg) -> None:
    db = pg.name("copyout")
    with pg.connect() as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(db)))
    with pg.connect(db) as conn:
        conn.execute(AWKWARD)
    with pg.connect(db) as conn, conn.cursor() as cur, cur.copy(QUERY) as copy:
        expected = b"".join(bytes(block) for block in copy)
    with pg.connect(db, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        blocks = list(copy_out(conn, QUERY.encode(), block=64 << 10))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (20002,)  # the connection goes on
    assert b"".join(blocks) == expected
    assert len(blocks) > 10 and all(b.endswith(b"\n") for b in blocks)  # whole rows in every block
    assert expected.count(b"\n") == 20002  # COPY's text escapes the newlines inside values


def test_an_error_from_the_server_is_raised_as_psycopg_raises_it(pg: Pg) -> None:
    db = pg.name("copyout_err")
    with pg.connect() as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(db)))
    with pg.connect(db) as conn:
        conn.execute("CREATE TABLE t (x int)")
        with pytest.raises(psycopg.errors.UndefinedTable):
            list(copy_out(conn, b"COPY public.missing (x) TO STDOUT"))
        # a failure in the middle of the rows: division by zero at row 5000
        with pytest.raises(psycopg.errors.DivisionByZero):
            list(copy_out(conn, b"COPY (SELECT 1 / (5000 - i) FROM generate_series(1, 10000) i) TO STDOUT", block=1024))
        assert conn.execute("SELECT 42").fetchone() == (42,)

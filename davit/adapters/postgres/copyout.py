"""`COPY ... TO STDOUT` read through libpq directly, rows gathered into blocks of about 1 MB.

The server sends one CopyData message per row, and psycopg's `Copy` iterator hands each one up
through a stack of Python generators: on pgbench_accounts (7 million rows of ~120 bytes) that
per-row Python cost was most of a backup's time (py-spy: `Copy.__iter__`/`read`/`wait` and the
per-block code around them, ~0.34x of `pg_dump -Fd -j2`). Here each row costs one call into
psycopg's compiled libpq wrapper (`PGconn.get_copy_data`, non-blocking, the socket polled when it
has nothing) and a list append; the caller gets the same bytes, in larger blocks.

The connection is a psycopg one, inside its transaction (the run's exported snapshot): the query
goes out on its `pgconn` and every result is read back before returning, so psycopg finds the
connection idle in that transaction afterwards. An error from the server is raised as psycopg
raises it (`psycopg.errors.error_from_result`), so callers' `except` clauses stay as they were.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

BLOCK = 1 << 20
POLL_MS = 60_000  # poll() wakes up at least this often (nothing to do then but poll again)


def _wait_readable(pgconn: Any) -> None:
    poller = select.poll()  # not select(): a daemon may hold more than FD_SETSIZE descriptors
    poller.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    while not poller.poll(POLL_MS):
        pass
    pgconn.consume_input()


def _result(pgconn: Any) -> Any:
    """The next result of the query in flight (None: no more)."""
    while pgconn.is_busy():
        _wait_readable(pgconn)
    return pgconn.get_result()


def _raise_if_failed(conn: psycopg.Connection[Any], res: Any, wanted: pq.ExecStatus) -> None:
    """Raise psycopg's error for a result that is not `wanted`, after reading every result
    left, so that the connection can take its next command (a rollback, another query)."""
    if res is not None and res.status == wanted:
        return
    while _result(conn.pgconn) is not None:
        pass
    if res is None:
        raise psycopg.OperationalError("the server ended the COPY without a result")
    raise error_from_result(res, encoding=conn.info.encoding)


def copy_out(conn: psycopg.Connection[Any], query: bytes, block: int = BLOCK) -> Iterator[bytes]:
    """The output of `query` (a `COPY ... TO STDOUT`) in blocks of whole rows, about `block` bytes each."""
    pgconn = conn.pgconn
    pgconn.send_query(query)
    _raise_if_failed(conn, _result(pgconn), pq.ExecStatus.COPY_OUT)
    parts: list[Any] = []
    size = 0
    while True:
        nbytes, data = pgconn.get_copy_data(1)
        if nbytes > 0:
            parts.append(data)
            size += nbytes
            if size >= block:
                yield b"".join(parts)
                parts, size = [], 0
        elif nbytes == 0:
            _wait_readable(pgconn)
        else:
            break  # -1: the COPY is over (its result follows); -2: an error (its result follows)
    if parts:
        yield b"".join(parts)
    _raise_if_failed(conn, _result(pgconn), pq.ExecStatus.COMMAND_OK)
    while _result(pgconn) is not None:  # read to the end, so the connection is idle again
        pass

"""Connections that all read one consistent point of the server, for the tables of a run.

One connection: `START TRANSACTION WITH CONSISTENT SNAPSHOT` (InnoDB's MVCC; what
`mariadb-dump --single-transaction` does). Several (`parallel`): mydumper's way, `FLUSH TABLES
WITH READ LOCK` on a coordinating connection while each worker starts its snapshot, then
`UNLOCK TABLES`: no commit can land between two workers' snapshots, so they all see the same
committed state; writers are held only for the few milliseconds that takes (after FTWRL has
waited for running statements to end). A user without the RELOAD privilege cannot take that
lock: the run then reads every table through one connection, and says so in a warning.
Tables of other engines (MyISAM, Aria...) are not covered by any snapshot: the backup names
them in a warning.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql

from davit.adapters.mysql.client import Server

NO_RELOAD = {1227, 1044, 1045}  # ER_SPECIFIC_ACCESS_DENIED_ERROR and kin
START = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"


class ConsistentConnections:
    """`take` a connection (inside a `with`), read through it, and it goes back to the pool."""

    def __init__(self, server: Server, wanted: int) -> None:
        self.server = server
        self.wanted = wanted
        self.warning: str | None = None
        self._pool: queue.Queue[Any] = queue.Queue()
        self._all: list[Any] = []

    def open(self) -> ConsistentConnections:
        count = self.wanted
        if count > 1 and not self._open_locked(count):
            count = 1
        if count == 1:
            conn = self._new()
            with self.server.errors("starting a consistent snapshot"), conn.cursor() as cur:
                cur.execute(START)
        return self

    def _new(self) -> Any:
        conn = self.server.connect(rows=True)
        self._all.append(conn)
        self._pool.put(conn)
        with self.server.errors("starting a consistent snapshot"), conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return conn

    def _open_locked(self, count: int) -> bool:
        coordinator = self.server.connect()
        try:
            with coordinator.cursor() as lock:
                try:
                    lock.execute("FLUSH TABLES WITH READ LOCK")
                except pymysql.err.MySQLError as exc:
                    if exc.args and exc.args[0] in NO_RELOAD:
                        self.warning = (
                            f"{self.server.what}: user {self.server.user!r} may not FLUSH TABLES WITH READ LOCK "
                            "(needs RELOAD): the tables are read one after another through one connection, "
                            "so that they all share one consistent point"
                        )
                        return False
                    with self.server.errors("locking the tables to start the snapshots"):
                        raise
                try:
                    for _ in range(count):
                        conn = self._new()
                        with self.server.errors("starting a consistent snapshot"), conn.cursor() as cur:
                            cur.execute(START)
                finally:
                    with self.server.errors("unlocking the tables"):
                        lock.execute("UNLOCK TABLES")
            return True
        finally:
            coordinator.close()

    @contextmanager
    def take(self) -> Iterator[Any]:
        conn = self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def close(self) -> None:
        for conn in self._all:
            try:
                conn.close()
            except Exception:  # closing a connection the server dropped: nothing left to do
                pass
        self._all.clear()

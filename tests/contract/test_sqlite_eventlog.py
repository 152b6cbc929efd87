"""The SQLite event store keeps the event log's contract (tests/contract/eventlog_contract.py);
its own promises beyond it (durability across processes, keys, outages, damage) are tested in
tests/unit/test_eventstore.py, test_keyed_chain.py and tests/integration/test_event_log_outage.py."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from davit.eventstore.chain import ChainReport
from davit.eventstore.logkey import LogKey
from davit.eventstore.sqlite import SqliteEventStore
from tests.contract.eventlog_contract import (
    ROW_COLUMNS,
    EventLogContract,
    KeyedEventLogContract,
    KeyedTampering,
    Tampering,
    forged,
)

_TAMPER = {
    "edit": """UPDATE events SET data = '{"n":999}' WHERE position = ?""",
    "delete": "DELETE FROM events WHERE position = ?",
    "delete-newest": "DELETE FROM events WHERE position >= ?",
}


class SqliteLog:
    """A log file; the writer is davitd's kind of store (with the log key if given), the reader
    the CLI's (read-only, its own connections), both opened on the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def writer(self, key: LogKey | None = None) -> AsyncIterator[SqliteEventStore]:
        async with SqliteEventStore(self.path, key=key) as store:
            yield store

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[SqliteEventStore]:
        store = await SqliteEventStore(self.path).open(create=False, readonly=True)
        try:
            yield store
        finally:
            await store.close()

    def tamper(self, how: Tampering | KeyedTampering, position: int) -> None:
        with sqlite3.connect(self.path) as conn:
            if how == "forge":
                rows = conn.execute(f"SELECT {ROW_COLUMNS} FROM events ORDER BY position").fetchall()
                changed, head = forged(rows, position)
                conn.executemany("UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE position = ?", changed)
                conn.execute("UPDATE chain_head SET position = ?, hash = ? WHERE id = 1", head)
            elif how == "rewind":
                conn.execute("DELETE FROM events WHERE position >= ?", (position,))
                conn.execute(
                    "UPDATE chain_head SET position = ?, hash = (SELECT hash FROM events WHERE position = ?) WHERE id = 1",
                    (position - 1, position - 1),
                )
            else:
                conn.execute(_TAMPER[how], (position,))
        conn.close()

    async def verify(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport:
        store = await SqliteEventStore(self.path).open(create=False, readonly=True)
        try:
            return await store.verify_chain(key, key_path)
        finally:
            await store.close()


class TestSqliteEventLog(EventLogContract, KeyedEventLogContract):
    @pytest.fixture
    def log(self, tmp_path: Path) -> SqliteLog:
        return SqliteLog(tmp_path / "state" / "davit.db")

    @pytest.fixture
    def keyed_log(self, log: SqliteLog) -> SqliteLog:
        return log

"""The in-memory event store keeps the contract of the SQLite one (tests/contract/eventlog_contract.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from davit.eventstore.chain import ChainReport
from davit.eventstore.logkey import LogKey
from davit.eventstore.memory import MemoryEventStore
from tests.contract.eventlog_contract import EventLogContract, KeyedEventLogContract, KeyedTampering, Tampering, forged


class MemoryLog:
    """One `MemoryEventStore`, handed to writer and reader alike (it has no connections); a
    writer with a key makes the store append as one opened with that key (`use_key`)."""

    def __init__(self) -> None:
        self.store = MemoryEventStore()

    @asynccontextmanager
    async def writer(self, key: LogKey | None = None) -> AsyncIterator[MemoryEventStore]:
        self.store.use_key(key)
        yield self.store

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[MemoryEventStore]:
        yield self.store

    def tamper(self, how: Tampering | KeyedTampering, position: int) -> None:
        # (reaches into the store's rows: what an edit of the database file is to SQLite)
        rows = self.store._rows
        if how == "forge":
            as_rows = [
                (r.position, r.event_id, r.stream, r.version, r.type, r.schema, r.data, r.recorded_at, r.hash) for r in rows
            ]
            changed, self.store._head = forged(as_rows, position)
            for data, prev_hash, hash_, at in changed:
                rows[at - 1] = dataclasses.replace(rows[at - 1], data=data, prev_hash=prev_hash, hash=hash_)
        elif how == "rewind":
            del rows[position - 1 :]
            self.store._head = (position - 1, rows[-1].hash)  # (its seal, `_mac`, left as it was)
        elif how == "edit":
            rows[position - 1] = dataclasses.replace(rows[position - 1], data='{"n":999}')
        elif how == "delete":
            del rows[position - 1]
        else:
            del rows[position - 1 :]

    async def verify(self, key: LogKey | None = None, key_path: Path | None = None) -> ChainReport:
        return await self.store.verify_chain(key, key_path)


class TestMemoryEventLog(EventLogContract, KeyedEventLogContract):
    @pytest.fixture
    def log(self) -> MemoryLog:
        return MemoryLog()

    @pytest.fixture
    def keyed_log(self, log: MemoryLog) -> MemoryLog:
        return log

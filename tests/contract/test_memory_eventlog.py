"""The in-memory event store keeps the contract of the SQLite one (tests/contract/eventlog_contract.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from davit.eventstore.chain import ChainReport
from davit.eventstore.memory import MemoryEventStore
from tests.contract.eventlog_contract import EventLogContract, Tampering


class MemoryLog:
    """One `MemoryEventStore`, handed to writer and reader alike (it has no connections)."""

    def __init__(self) -> None:
        self.store = MemoryEventStore()

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[MemoryEventStore]:
        yield self.store

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[MemoryEventStore]:
        yield self.store

    def tamper(self, how: Tampering, position: int) -> None:
        # (reaches into the store's rows: what an edit of the database file is to SQLite)
        rows = self.store._rows
        if how == "edit":
            rows[position - 1] = dataclasses.replace(rows[position - 1], data='{"n":999}')
        elif how == "delete":
            del rows[position - 1]
        else:
            del rows[position - 1 :]

    async def verify(self) -> ChainReport:
        return await self.store.verify_chain()


class TestMemoryEventLog(EventLogContract):
    @pytest.fixture
    def log(self) -> MemoryLog:
        return MemoryLog()

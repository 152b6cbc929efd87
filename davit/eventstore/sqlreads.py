"""The reads the SQL stores (SQLite, PostgreSQL) share: one schema (`schema.py`), one set of
queries. A store supplies `_reading()`, a connection for one bounded read with its own errors
mapped; these methods are the `LogReader` port on top of it. `iter_pages` is the paging every
store (the memory one too) does over its `read_all`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from davit.domain.events import StoredEvent
from davit.eventstore import schema as s


def json_object(text_: str, position: int) -> dict[str, Any]:
    """An event's data: a JSON object, or `ValueError` naming the position (damage)."""
    try:
        data = json.loads(text_)
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested deeper than this stack
        data = None
    if not isinstance(data, dict):
        raise ValueError(f"the data of the event at position {position} is not a JSON object")
    return data


def stored_event(row: Row[Any]) -> StoredEvent:
    return StoredEvent(
        position=row.position,
        stream=row.stream,
        version=row.version,
        event_id=row.event_id,
        type=row.type,
        schema=row.schema,
        data=json_object(row.data, row.position),
        recorded_at=row.recorded_at,
        hash=row.hash,
    )


def starts_with(prefix: str) -> Any:
    """Streams whose names start with `prefix`, literally. SQLite's LIKE ignores the case of
    ASCII letters ("run_" matched "Run_4" too), so the exact comparison of the first characters
    decides; the escaped LIKE stays beside it as it was."""
    return and_(s.events.c.stream.startswith(prefix, autoescape=True), func.substr(s.events.c.stream, 1, len(prefix)) == prefix)


async def iter_pages(
    read_all: Callable[[int, int, str | None], Awaitable[list[StoredEvent]]],
    after_position: int,
    stream_prefix: str | None,
    page: int,
) -> AsyncIterator[StoredEvent]:
    """Every event after a position, read page by page."""
    while True:
        rows = await read_all(after_position, page, stream_prefix)
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after_position = rows[-1].position


class SqlReads:
    """`LogReader` over the shared schema, for a store that gives `_reading()`."""

    def _reading(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        query = (
            select(s.events).where(s.events.c.stream == stream, s.events.c.version >= from_version).order_by(s.events.c.version)
        )
        return await self._select(query)

    async def read_all(self, after_position: int = 0, limit: int = 1000, stream_prefix: str | None = None) -> list[StoredEvent]:
        query = select(s.events).where(s.events.c.position > after_position)
        if stream_prefix is not None:
            query = query.where(starts_with(stream_prefix))
        return await self._select(query.order_by(s.events.c.position).limit(limit))

    async def iter_all(
        self, after_position: int = 0, stream_prefix: str | None = None, page: int = 2000
    ) -> AsyncIterator[StoredEvent]:
        async for row in iter_pages(self.read_all, after_position, stream_prefix, page):
            yield row

    async def stream_version(self, stream: str) -> int:
        async with self._reading() as conn:
            current = (await conn.execute(select(func.max(s.events.c.version)).where(s.events.c.stream == stream))).scalar()
            return int(current or 0)  # inside: a version that is text is damage, named as such

    async def head_position(self) -> int:
        async with self._reading() as conn:
            current = (await conn.execute(select(func.max(s.events.c.position)))).scalar()
            return int(current or 0)

    async def streams(self, prefix: str) -> list[str]:
        async with self._reading() as conn:
            rows = await conn.execute(
                select(s.events.c.stream).where(starts_with(prefix), s.events.c.version == 1).order_by(s.events.c.position)
            )
            return [r.stream for r in rows]

    async def tail(
        self, after_position: int = 0, stream_prefix: str | None = None, poll_seconds: float = 0.2
    ) -> AsyncIterator[StoredEvent]:
        """Every event after `after_position`, in order, then new ones as they are committed
        (on PostgreSQL safe by its position lock: see `postgres.py`)."""
        while True:
            rows = await self.read_all(after_position, 1000, stream_prefix)
            for row in rows:
                yield row
                after_position = row.position
            if not rows:
                await asyncio.sleep(poll_seconds)

    async def _select(self, query: Any) -> list[StoredEvent]:
        async with self._reading() as conn:
            return [stored_event(r) for r in await conn.execute(query)]

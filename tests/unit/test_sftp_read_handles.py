"""The SFTP backend's cache of open read handles (`SftpSession.acquire`), driven on one event
loop with fake files: two readers open the same pack at once, and the object is replaced
(`forget`) while the slower one closes its spare handle. A fresh-clone CI run showed the
reader then failing with a KeyError from the cache."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from davit.adapters.repository.backends.sftp_session import SftpSession


class FakeFile:
    def __init__(self, name: str, closing: asyncio.Event | None = None) -> None:
        self.name, self.closing, self.closed = name, closing, False

    async def close(self) -> None:
        if self.closing is not None:
            await self.closing.wait()
        self.closed = True


def bare_session(loop: asyncio.AbstractEventLoop) -> Any:
    session: Any = SftpSession.__new__(SftpSession)  # no connection: only the handle cache is used
    session._handles = OrderedDict()
    session._loop = loop
    return session


def test_a_pack_replaced_while_a_second_reader_closes_its_spare_handle_is_opened_afresh() -> None:
    async def scenario() -> None:
        session = bare_session(asyncio.get_running_loop())
        opened = asyncio.Event()
        closing = asyncio.Event()
        files: list[FakeFile] = []

        async def slow_opener() -> Any:
            await opened.wait()
            files.append(FakeFile(f"slow-{len(files)}", closing if not files else None))
            return files[-1]

        async def fast_opener() -> Any:
            return FakeFile("fast")

        slow = asyncio.create_task(session.acquire("packs/ab/pack", slow_opener))
        await asyncio.sleep(0)
        fast = await session.acquire("packs/ab/pack", fast_opener)  # cached first
        opened.set()
        for _ in range(5):
            await asyncio.sleep(0)  # the slow reader is now closing its spare handle
        session.forget("packs/ab/pack")  # the object is replaced meanwhile
        closing.set()
        handle = await slow
        assert fast.doomed and not handle.doomed  # the slow reader reads a handle opened after the replacement
        assert handle.file is files[-1] and files[0].closed and len(files) == 2
        assert session._handles["packs/ab/pack"] is handle and handle.users == 1

    asyncio.run(scenario())

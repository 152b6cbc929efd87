"""A counting pass-through for S3 requests, so the bench can say how often a tool lists the bucket.

S3 is paid per request and per round trip, and the issue's promise for an unchanged backup is a
count ("lists each prefix at most once"), the same for davit and for restic. Counting on the wire
treats both tools alike and needs nothing from either: the tool is pointed at this proxy's port
instead of the S3 server's, and every request line it sends is recorded before its bytes go on
unchanged (SigV4 signs the Host header the client sent, which the server then verifies as
received, so a byte-for-byte relay keeps signatures valid). Answers are relayed back untouched.

Only the client's side is parsed, and only as far as needed to find where one request ends and
the next begins on a kept-alive connection (Content-Length or chunked bodies). It is Python on
loopback: the bench times nothing through it, it only counts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

COPY = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted, e.g. /bucket/davit/index/ab.idx
    query: dict[str, list[str]]
    at: float  # time.time() when its request line arrived


class S3Counter:
    """A loopback TCP proxy to `127.0.0.1:upstream_port` recording every HTTP request line."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3count", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the S3 counting proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0, limit=COPY))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def mark(self) -> int:
        """A position in the record: `since(mark)` gives the requests made after it."""
        with self._lock:
            return len(self._requests)

    def since(self, mark: int) -> list[Request]:
        with self._lock:
            return self._requests[mark:]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port, limit=COPY)
        back = asyncio.ensure_future(_copy(up_reader, writer))
        try:
            await self._requests_of(reader, up_writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            up_writer.close()
            try:
                await back
            except ConnectionError:
                pass
            writer.close()

    async def _requests_of(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        """Relay requests one by one, recording each request line."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection between requests
            up.write(head)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            parts = urlsplit(target)
            with self._lock:
                self._requests.append(
                    Request(method, unquote(parts.path), parse_qs(parts.query, keep_blank_values=True), time.time())
                )
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "chunked" in headers.get("transfer-encoding", "").lower():
                await _relay_chunked(reader, up)
            else:
                await _relay_exactly(reader, up, int(headers.get("content-length", "0")))
            await up.drain()


async def _relay_exactly(reader: asyncio.StreamReader, up: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, COPY))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        up.write(data)
        await up.drain()
        n -= len(data)


async def _relay_chunked(reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        up.write(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                up.write(trailer)
            up.write(b"\r\n")
            return
        await _relay_exactly(reader, up, size + 2)  # the chunk and its CRLF


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(COPY):
        writer.write(data)
        await writer.drain()


def tally(requests: list[Request], bucket: str, prefix: str) -> Counter[tuple[str, str]]:
    """(operation, area) -> requests, for the repository at `bucket`/`prefix`: a bucket listing is
    `LIST` under the area of its `prefix` parameter (one per page), anything else is its HTTP
    method under the area of its key (`index/` for `PREFIX/index/ab`); requests outside the
    repository are counted under `(elsewhere)`."""
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    out: Counter[tuple[str, str]] = Counter()
    for r in requests:
        key = r.path.lstrip("/").removeprefix(bucket).lstrip("/")
        if r.method == "GET" and key == "" and ("list-type" in r.query or "prefix" in r.query or not r.query):
            op, key = "LIST", r.query.get("prefix", [""])[0]
        else:
            op = r.method
        if not key.startswith(root):
            out[(op, "(elsewhere)")] += 1
            continue
        rest = key[len(root) :]
        head, slash, _ = rest.partition("/")
        out[(op, head + slash)] += 1
    return out

"""An SSH connection usable from several threads at once: the source side of a migration.

`remote.RemoteHost` drives its private event loop from the calling thread, which suits the
target, used by one thread at a time. A source reached over SSH is read by the pipeline's tar
reader thread while the run's thread talks to the target, so `ThreadedHost` runs its loop in
a thread of its own and every call (`run`, and reads of a `RemoteProcess`) is handed to that
loop. The connection is opened by `remote.open_connection`: the same host-key check against
the job's known_hosts (never auto-accepted), the same key, the same error mapping.

`RemoteProcess` offers what `pipeline._Reader` uses of a `subprocess.Popen` (`stdout.read`,
`stderr.read`, `poll`, `wait`, `kill`), so the source's `tar c` streams through the same
chunked, resumable transfer as a local one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncssh

from davit.adapters.ssh.remote import (
    RemoteCommandFailed,
    Result,
    SshAddress,
    connect_errors,
    open_connection,
    read_known_hosts,
    session_errors,
)

T = TypeVar("T")


class ThreadedHost:
    def __init__(self, address: SshAddress) -> None:
        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="davit-ssh-source", daemon=True)
        self._conn: asyncssh.SSHClientConnection | None = None

    def _open(self) -> None:
        known = read_known_hosts(self.address)
        self._thread.start()
        with connect_errors(self.address):
            self._conn = self._call(open_connection(self.address, known))

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def conn(self) -> asyncssh.SSHClientConnection:
        assert self._conn is not None, "used outside `connect_threaded`"
        return self._conn

    def run(self, command: str, *, input: bytes | None = None, check: bool = True, timeout: float | None = 600) -> Result:
        """Run `command` through the login shell, from any thread; as `RemoteHost.run`."""

        async def go() -> Any:
            return await self.conn.run(command, input=input, encoding=None, check=False, timeout=timeout)

        with session_errors(f"on {self.address.where}: `{command[:200]}` was cut off"):
            result = self._call(go())
        out = (result.stdout or b"").decode(errors="replace")
        err = (result.stderr or b"").decode(errors="replace")
        status = result.exit_status if result.exit_status is not None else -1
        if check and status != 0:
            raise RemoteCommandFailed(self.address.where, command, status, err)
        return Result(status, out, err)

    def read_bytes(self, command: str, *, timeout: float | None = 600) -> bytes:
        """The stdout of `command`, as bytes (a file's content); `RemoteCommandFailed` if it fails."""
        with session_errors(f"on {self.address.where}: `{command[:200]}` was cut off"):
            result = self._call(self.conn.run(command, encoding=None, check=False, timeout=timeout))
        if result.exit_status != 0:
            err = (result.stderr or b"").decode(errors="replace") if isinstance(result.stderr, bytes) else ""
            raise RemoteCommandFailed(self.address.where, command, result.exit_status, err)
        out = result.stdout or b""
        return out if isinstance(out, bytes) else out.encode()

    def popen(self, command: str) -> RemoteProcess:
        """Start `command`; its stdout is read in pieces as the caller asks (flow-controlled)."""
        with session_errors(f"on {self.address.where}: `{command[:200]}` could not start"):
            proc: asyncssh.SSHClientProcess[bytes] = self._call(self._create(command))
        return RemoteProcess(self, proc)

    async def _create(self, command: str) -> Any:
        return await self.conn.create_process(command, encoding=None)

    def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            self._conn = None

            async def shut() -> None:
                conn.close()
                await conn.wait_closed()

            try:
                self._call(shut(), timeout=10)
            except (asyncssh.Error, OSError, TimeoutError):
                pass  # closing: the far side may be gone already
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()


@contextmanager
def connect_threaded(address: SshAddress) -> Iterator[ThreadedHost]:
    """One verified connection, its loop in its own thread, for the duration of the block."""
    host = ThreadedHost(address)
    try:
        host._open()
        yield host
    finally:
        host.close()


class _Stream:
    def __init__(self, host: ThreadedHost, reader: asyncssh.SSHReader[bytes]) -> None:
        self._host = host
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left with -1), fewer only at the end: as a pipe's
        buffered `read`, which `_Reader` cuts chunks with."""

        async def go() -> bytes:
            if size < 0:
                return await self._reader.read()
            parts: list[bytes] = []
            got = 0
            while got < size:
                piece = await self._reader.read(size - got)
                if not piece:
                    break
                parts.append(piece)
                got += len(piece)
            return b"".join(parts)

        with session_errors(f"on {self._host.address.where}: reading a stream was cut off"):
            return self._host._call(go())

    def close(self) -> None:
        pass  # the channel is closed by `RemoteProcess.kill` or ends with the command


class RemoteProcess:
    """A command running on a `ThreadedHost`, with the `subprocess.Popen` calls `_Reader` makes."""

    def __init__(self, host: ThreadedHost, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self._host = host
        self._proc = proc
        self.stdout = _Stream(host, proc.stdout)
        self.stderr = _Stream(host, proc.stderr)
        # `wait_closed`, not asyncssh's `wait`: that one lifts the flow control (the whole output
        # would pile up in memory) and, once the command ends, takes the output not yet read,
        # which `stdout.read` then never returns (a stream cut short at its tail)
        self._done: Future[None] = asyncio.run_coroutine_threadsafe(proc.wait_closed(), host._loop)

    def poll(self) -> int | None:
        return self._status() if self._done.done() else None

    def wait(self) -> int:
        with session_errors(f"on {self._host.address.where}: a command was cut off"):
            self._done.result()
        return self._status()

    def _status(self) -> int:
        try:
            self._done.result()
        except (asyncssh.Error, OSError):
            return -1
        status = self._proc.exit_status
        return status if status is not None else -1

    def kill(self) -> None:
        """Close the channel: the remote command gets SIGPIPE/EOF and `wait` returns."""
        self._host._loop.call_soon_threadsafe(self._proc.close)

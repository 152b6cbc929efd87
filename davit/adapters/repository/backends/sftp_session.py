"""One SSH connection with an SFTP client, on an event loop of its own, for `SftpBackend`.

The repository calls its backend from many worker threads at once. They all share this one
connection: each call is a coroutine submitted to the session's loop (a daemon thread), so
their SFTP requests are pipelined on the one channel instead of opening a connection each.

The session connects on first use and again after a loss. A loss (the server stopped, a TCP
reset, keepalives unanswered) surfaces as `Lost`, which the backend retries within its budget;
what retrying cannot fix (an untrusted host key, a refused key, no repository directory)
raises a permanent error at once, and again on every later call without reconnecting.

Read handles are cached here, on the loop, so that a pack's blobs are read by offset without
one open per blob; the cache is bounded, and forgotten whole when the connection is lost.
"""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncssh

from davit.adapters.secrets import redact
from davit.adapters.sshtrust import NEGOTIATION, PREFERRED_CIPHERS, HostKeyRejected
from davit.domain.errors import BackendDenied, DavitError

T = TypeVar("T")

# the connection or its channel is gone: the request may or may not have been done
LOST_ERRORS = (
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    ConnectionError,
    TimeoutError,
    EOFError,
)
_OPEN_HANDLES = 64
# a connect that failed this recently is not tried again by the next waiting thread: with
# many threads retrying at once, one attempt answers for all of them
_CONNECT_FAILURE_REUSE = 1.0


class Lost(Exception):
    """The connection failed or broke; the operation may be retried (internal to the backend)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    user: str
    host: str
    port: int
    root: str  # the repository directory on the server, absolute
    where: str  # the URL without credentials, for messages
    known_hosts: Path
    identity_file: Path
    connect_timeout: float


class _Handle:
    def __init__(self, file: asyncssh.SFTPClientFile) -> None:
        self.file = file
        self.users = 0
        self.doomed = False


class SftpSession:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sftp {endpoint.where}", daemon=True)
        self._thread.start()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._connecting = asyncio.Lock()
        self._failed: tuple[float, BaseException] | None = None  # last connect failure, when
        self._permanent: DavitError | None = None
        self._handles: OrderedDict[str, _Handle] = OrderedDict()
        self.fsync = True  # the server offers fsync@openssh.com (until it says otherwise)
        self.known_dirs: set[str] = set()  # directories known to exist (paths on the server)

    # --- running work on the loop ----------------------------------------------------------

    def call(self, job: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        """Run `job` with the connected client and wait for it (from any thread)."""
        return self.submit(job).result()

    def submit(self, job: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> Future[T]:
        if self._loop.is_closed():  # used after `close` (a run still holding a replaced repository)
            raise self._permanent or BackendDenied(self.endpoint.where, "use", "the backend was closed")
        return asyncio.run_coroutine_threadsafe(self._run(job), self._loop)

    async def _run(self, job: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        sftp = await self._client()
        try:
            return await job(sftp)
        except LOST_ERRORS as exc:
            self._drop(sftp)
            raise Lost(describe(exc)) from None

    # --- the connection --------------------------------------------------------------------

    async def _client(self) -> asyncssh.SFTPClient:
        if self._permanent is not None:
            raise self._permanent
        async with self._connecting:
            if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
                return self._sftp
            self._drop(self._sftp)
            if self._failed is not None and time.monotonic() - self._failed[0] < _CONNECT_FAILURE_REUSE:
                raise Lost(describe(self._failed[1]))
            try:
                self._conn, self._sftp = await self._connect()
            except DavitError as exc:
                self._permanent = exc
                raise
            except Lost as exc:
                self._failed = (time.monotonic(), exc)
                raise
            except (*LOST_ERRORS, OSError, asyncssh.Error) as exc:
                self._failed = (time.monotonic(), exc)
                raise Lost(f"cannot connect: {describe(exc)}") from None
            self._failed = None
            return self._sftp

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        e = self.endpoint
        known = read_known_hosts(e)
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    e.host,
                    e.port,
                    username=e.user,
                    client_keys=[str(e.identity_file)],
                    passphrase=None,
                    known_hosts=known,
                    config=[],
                    agent_path=None,
                    password=None,
                    kbdint_auth=False,
                    encryption_algs=PREFERRED_CIPHERS,
                    connect_timeout=e.connect_timeout,
                    # a server that stops answering without closing the socket (stopped, a
                    # partition) is noticed within about three intervals
                    keepalive_interval=e.connect_timeout,
                    keepalive_count_max=3,
                ),
                e.connect_timeout + 5,
            )
        except DavitError:
            raise
        except Exception as exc:  # a refused login is a DisconnectError too: sort before retrying
            raise connect_error(e, exc) from None
        try:
            sftp = await conn.start_sftp_client()
            await self._check_root(sftp)
        except BaseException:
            conn.abort()
            raise
        return conn, sftp

    async def _check_root(self, sftp: asyncssh.SFTPClient) -> None:
        e = self.endpoint
        try:
            attrs = await sftp.stat(e.root)  # the operator's choice: a symlink to it is fine
        except asyncssh.SFTPNoSuchFile:
            raise BackendDenied(e.where, "open", f"no directory {e.root} on the server: create it first (mode 0700)") from None
        except asyncssh.SFTPPermissionDenied:
            raise BackendDenied(e.where, "open", f"the server refuses access to {e.root}") from None
        if attrs.permissions is None or not stat.S_ISDIR(attrs.permissions):
            raise BackendDenied(e.where, "open", f"{e.root} on the server is not a directory")
        self.known_dirs.add(e.root)

    def _drop(self, sftp: asyncssh.SFTPClient | None) -> None:
        """Forget the connection `sftp` belongs to, if it is still the current one."""
        if sftp is None or sftp is not self._sftp:
            return
        self._handles.clear()  # handles die with their connection
        self.known_dirs.clear()
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()

    # --- read handles ----------------------------------------------------------------------

    async def acquire(self, path: str, opener: Callable[[], Awaitable[asyncssh.SFTPClientFile]]) -> _Handle:
        while True:  # the cache is only read and changed between awaits, never across one
            handle = self._handles.get(path)
            if handle is None:
                file = await opener()
                if path not in self._handles:
                    handle = self._handles[path] = _Handle(file)
                    self._evict()
                else:  # another coroutine opened it meanwhile; it may be forgotten while we close ours
                    await quietly(file.close())
                    continue
            self._handles.move_to_end(path)
            handle.users += 1
            return handle

    async def release(self, handle: _Handle) -> None:
        handle.users -= 1
        if handle.doomed and handle.users == 0:
            await quietly(handle.file.close())

    def forget(self, path: str) -> None:
        """Close the cached handle of `path` once nobody reads through it (the object is being
        replaced or removed: a handle would keep reading what was there)."""
        handle = self._handles.pop(path, None)
        if handle is not None:
            self._doom(handle)

    def _evict(self) -> None:
        for path in [p for p, h in self._handles.items() if h.users == 0][: max(0, len(self._handles) - _OPEN_HANDLES)]:
            self._doom(self._handles.pop(path))

    def _doom(self, handle: _Handle) -> None:
        handle.doomed = True
        if handle.users == 0:
            self._loop.create_task(quietly(handle.file.close()))

    # --- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        async def shut() -> None:
            conn, self._conn, self._sftp = self._conn, None, None
            self._handles.clear()
            self._permanent = self._permanent or BackendDenied(self.endpoint.where, "use", "the backend was closed")
            if conn is not None:
                conn.close()
                await asyncio.wait_for(conn.wait_closed(), 5)

        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        except (TimeoutError, *LOST_ERRORS, OSError, asyncssh.Error):
            pass  # closing a broken connection: nothing left to release
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


async def quietly(closing: Awaitable[object]) -> None:
    """Close a handle whose connection may be gone: nothing to do about a failure."""
    try:
        await closing
    except (*LOST_ERRORS, OSError, asyncssh.Error):
        pass


def read_known_hosts(e: Endpoint) -> asyncssh.SSHKnownHosts:
    try:
        return asyncssh.read_known_hosts(str(e.known_hosts))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise HostKeyRejected(e.where, str(e.known_hosts), f"cannot read known_hosts: {reason}") from None


def connect_error(e: Endpoint, exc: BaseException) -> DavitError | Lost:
    """What opening the connection raised, as a permanent davit error or a `Lost`. Never the
    text of a key-file error: it may quote the file."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyRejected(e.where, str(e.known_hosts), str(exc.reason or "not verifiable"))
    if isinstance(exc, asyncssh.PermissionDenied):
        return BackendDenied(e.where, "login", f"the server refused the key {e.identity_file} for user {e.user}")
    if isinstance(exc, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        why = f"{type(exc).__name__}; an encrypted key is not supported"
        return BackendDenied(e.where, "login", f"the key file {e.identity_file} cannot be used ({why})")
    if isinstance(exc, NEGOTIATION):
        return BackendDenied(e.where, "connect", redact(f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, OSError) and exc.filename is not None:  # the key file, unreadable
        why = exc.strerror or type(exc).__name__
        return BackendDenied(e.where, "login", f"cannot read the key file {e.identity_file}: {why}")
    return Lost(describe(exc))


def describe(exc: BaseException) -> str:
    if isinstance(exc, Lost):
        return exc.reason
    text = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}"[:300])

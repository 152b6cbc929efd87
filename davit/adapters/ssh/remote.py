"""A blocking SSH session for adapter code running in a worker thread.

`RemoteHost` opens one asyncssh connection on a private event loop and offers blocking
`run` (a command, optionally with bytes streamed to its stdin), `write_file`, and
`run_async` for work that drives several channels at once on that loop. The host
key is always checked against the job's `known_hosts`: an unknown or changed key raises
`HostKeyRejected` (`adapters/sshtrust.py`, shared with the SFTP repository backend).
Network trouble is `RemoteUnreachable` (retryable); a command that fails is
`RemoteCommandFailed` carrying its exit status and the tail of its stderr.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from davit.adapters.oserrors import os_error
from davit.adapters.secrets import redact
from davit.adapters.sshtrust import NEGOTIATION, PREFERRED_CIPHERS, HostKeyRejected
from davit.domain.errors import DavitError, PermanentError, RetryableError

T = TypeVar("T")


class RemoteUnreachable(RetryableError):
    pass


class RemoteLoginFailed(PermanentError):
    pass


class RemoteRefused(PermanentError):
    """The connection cannot be made as configured (an unreadable or malformed key file, no
    algorithm both sides accept): retrying cannot help."""


class RemoteCommandFailed(PermanentError):
    def __init__(self, where: str, command: str, status: int | None, stderr: str) -> None:
        tail = stderr.strip()[-800:]
        super().__init__(redact(f"on {where}: `{command[:200]}` exited {status}: {tail}"))
        self.status = status
        self.stderr = stderr


@dataclass(frozen=True)
class SshAddress:
    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    connect_timeout: float = 30

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


class RemoteHost:
    def __init__(self, address: SshAddress, loop: asyncio.AbstractEventLoop, conn: asyncssh.SSHClientConnection) -> None:
        self.address = address
        self._loop = loop
        self._conn = conn

    def run(self, command: str, *, input: bytes | None = None, check: bool = True, timeout: float | None = 600) -> Result:
        """Run `command` through the login shell; `input` is streamed to its stdin."""

        async def go() -> Any:
            if input is not None and not input:
                # asyncssh sends no EOF for empty input: a command reading its stdin waited forever
                # (prune_store with no chunk to keep hung the second migration of an unchanged stack)
                return await self._conn.run(command, stdin=asyncssh.DEVNULL, encoding=None, check=False, timeout=timeout)
            return await self._conn.run(command, input=input, encoding=None, check=False, timeout=timeout)

        with session_errors(f"on {self.address.where}: `{command[:200]}` was cut off"):
            result = self._loop.run_until_complete(go())
        out = (result.stdout or b"").decode(errors="replace")
        err = (result.stderr or b"").decode(errors="replace")
        status = result.exit_status if result.exit_status is not None else -1
        if check and status != 0:
            raise RemoteCommandFailed(self.address.where, command, status, err)
        return Result(status, out, err)

    def run_async(self, job: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        """Run `job` on this connection's event loop (several channels at once, streamed)."""
        with session_errors(f"on {self.address.where}: the connection was cut off"):
            return self._loop.run_until_complete(job(self._conn))

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write `path` atomically (temporary name, then rename)."""
        tmp = f"{path}.davit-tmp"
        q, qt = shlex.quote(path), shlex.quote(tmp)
        self.run(f'mkdir -p "$(dirname {q})" && cat > {qt} && chmod {mode:o} {qt} && mv -f {qt} {q}', input=data)


@contextmanager
def connect(address: SshAddress) -> Iterator[RemoteHost]:
    """One verified connection for the duration of the block."""
    loop = asyncio.new_event_loop()
    try:
        known = read_known_hosts(address)
        with connect_errors(address):
            conn = loop.run_until_complete(open_connection(address, known))
        try:
            yield RemoteHost(address, loop, conn)
        finally:
            conn.close()
            loop.run_until_complete(conn.wait_closed())
    finally:
        loop.close()


async def open_connection(address: SshAddress, known: Any) -> asyncssh.SSHClientConnection:
    """The verified connection `connect` opens (also `threaded.py`'s): the host key against
    `known` (read from the job's known_hosts), the job's key only, no agent, no ssh config."""
    return await asyncio.wait_for(
        asyncssh.connect(
            address.host,
            address.port,
            username=address.user,
            client_keys=[address.key_file],
            known_hosts=known,
            config=[],
            agent_path=None,
            encryption_algs=PREFERRED_CIPHERS,
            connect_timeout=address.connect_timeout,
        ),
        address.connect_timeout + 5,
    )


def read_known_hosts(address: SshAddress) -> Any:
    """The job's known_hosts, parsed; `HostKeyRejected` if it cannot be read."""
    try:
        return asyncssh.read_known_hosts(address.known_hosts)
    except (OSError, ValueError) as exc:
        raise HostKeyRejected(address.where, address.known_hosts, f"cannot read known_hosts: {exc}") from exc


@contextmanager
def connect_errors(address: SshAddress) -> Iterator[None]:
    """The boundary of opening a connection: what asyncssh and the OS raise, as davit errors."""
    try:
        yield
    except DavitError:
        raise
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyRejected(address.where, address.known_hosts, str(exc.reason or exc)) from exc
    except asyncssh.PermissionDenied as exc:
        raise RemoteLoginFailed(f"login to {address.where} with key {address.key_file} refused: {exc.reason}") from exc
    except NEGOTIATION as exc:
        raise RemoteRefused(redact(f"cannot connect to {address.where}: {type(exc).__name__}: {exc}")) from exc
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:  # ValueErrors: the key file's content
        raise RemoteRefused(
            f"cannot connect to {address.where}: the key file {address.key_file} cannot be used: {type(exc).__name__}"
        ) from None
    except OSError as exc:
        # the key file is read here too: an unreadable one is the operator's to fix, not the network's
        raise os_error(exc, f"cannot connect to {address.where}", RemoteUnreachable, RemoteRefused, redact) from exc
    except (asyncssh.Error, TimeoutError) as exc:
        raise RemoteUnreachable(redact(f"cannot connect to {address.where}: {exc}")) from exc


@contextmanager
def session_errors(doing: str) -> Iterator[None]:
    """The boundary of work on an open connection: it was cut off (retryable), or the local
    side failed (a full disk while streaming is `StorageFull`)."""
    try:
        yield
    except DavitError:
        raise
    except OSError as exc:
        raise os_error(exc, doing, RemoteUnreachable, RemoteRefused, redact) from exc
    except (asyncssh.Error, TimeoutError) as exc:
        raise RemoteUnreachable(redact(f"{doing}: {exc}")) from exc

"""This host as a migration's target: what `ssh/remote.py`'s `RemoteHost` offers, run here.

`compose.restore` onto the local engine (no `[target] host`) uses the migration's target side
unchanged: the same shell commands (`target.py`, `confined.py`, `binds.py`, `images.py`) and the
same pipeline (`pipeline.py`, which opens processes on a "connection" and streams to and from
them), here through `/bin/sh` subprocesses, with `DOCKER_HOST` set to the job's engine. The
processes get this environment otherwise, so davitd's own user runs them (root, as an SSH
target's user usually is: bind data keeps its owners).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shlex
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from davit.adapters.secrets import redact
from davit.adapters.ssh.remote import RemoteCommandFailed, Result

T = TypeVar("T")


@dataclass(frozen=True)
class LocalAddress:
    engine: str

    @property
    def where(self) -> str:
        return f"this host ({redact(self.engine)})"

    @property
    def host(self) -> str:
        return "this host"

    @property
    def user(self) -> str:
        return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class _Done:
    exit_status: int | None
    stderr: bytes


class _Process:
    """What the pipeline uses of an asyncssh process, for a local subprocess: `stdin` (write,
    drain, write_eof), `stdout.readline`, `stderr.read`, `wait`, `exit_status`, `close`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.stdin = _Stdin(proc.stdin)
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self._err = asyncio.ensure_future(proc.stderr.read())  # read as it comes: a full pipe would block the process

    @property
    def exit_status(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> _Done:
        await self._proc.wait()
        return _Done(self._proc.returncode, await self._err)

    def close(self) -> None:
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        self._err.cancel()


class _Stdin:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        if self._writer.can_write_eof():
            self._writer.write_eof()
        else:
            self._writer.close()


class _Connection:
    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._procs: list[_Process] = []

    async def create_process(self, command: str, encoding: Any = None) -> _Process:
        wrapped = _Process(await _shell(command, self._env))
        self._procs.append(wrapped)
        return wrapped

    async def run(self, command: str, encoding: Any = None, check: bool = False, timeout: float | None = None) -> _Completed:
        """asyncssh's `run` as `remotebatch.run_batch` uses it: bytes out, never raising on status."""
        status, out, err = await _communicate(command, self._env, b"", timeout)
        return _Completed(status, out, err)


@dataclass
class _Completed:
    exit_status: int
    stdout: bytes
    stderr: bytes


async def _shell(command: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _communicate(command: str, env: dict[str, str], input: bytes, timeout: float | None) -> tuple[int, bytes, bytes]:
    proc = await _shell(command, env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, b"", f"timed out after {timeout}s".encode()
    return proc.returncode if proc.returncode is not None else -1, out, err


class LocalHost:
    """`RemoteHost`'s interface (`address.where`, `run`, `run_async`, `write_file`), here."""

    def __init__(self, address: LocalAddress, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self._loop = loop
        self._env = {**os.environ, "DOCKER_HOST": address.engine}

    def run(self, command: str, *, input: bytes | None = None, check: bool = True, timeout: float | None = 600) -> Result:
        status, out_b, err_b = self._loop.run_until_complete(_communicate(command, self._env, input or b"", timeout))
        out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
        if check and status != 0:
            raise RemoteCommandFailed(self.address.where, command, status, err)
        return Result(status, out, err)

    def run_async(self, job: Callable[[Any], Awaitable[T]]) -> T:
        return self._loop.run_until_complete(job(_Connection(self._env)))

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        tmp = f"{path}.davit-tmp"
        q, qt = shlex.quote(path), shlex.quote(tmp)
        self.run(f'mkdir -p "$(dirname {q})" && cat > {qt} && chmod {mode:o} {qt} && mv -f {qt} {q}', input=data)


@contextmanager
def connect(address: LocalAddress) -> Iterator[LocalHost]:
    loop = asyncio.new_event_loop()
    try:
        yield LocalHost(address, loop)
    finally:
        loop.close()

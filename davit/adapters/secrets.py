"""Resolving secret references (`*_env`, `*_file`) at run time, and keeping secrets out of text.

A job names where a secret lives, never the secret. Adapters resolve it when a run needs it,
and pass every message that could carry it through `redact` before it leaves the adapter
(events, logs, exceptions): a URI keeps its scheme, host and path but loses its credentials.
"""

from __future__ import annotations

import os
import select
import stat
import time

from davit.domain.errors import PermanentError
from davit.domain.redaction import URI_CREDENTIALS, strip_uri_credentials

MAX_SECRET_BYTES = 64 << 10  # a key, a passphrase or a URI with credentials; not more
PIPE_WAIT_SECONDS = 10.0


class SecretUnavailable(PermanentError):
    pass


def resolve(env: str | None, file: str | None, what: str) -> str:
    """The secret's value from the environment variable or file the job names."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise SecretUnavailable(f"{what}: environment variable {env} is not set for davitd")
        return value
    if file is not None:
        if "\0" in file:  # (os.open's ValueError would say neither what nor where)
            raise SecretUnavailable(f"{what}: the file's name {file!r} holds a NUL byte")
        try:
            return _read_secret_file(file, what).decode().strip()
        except OSError as exc:
            raise SecretUnavailable(f"{what}: cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:  # its text would quote the secret's bytes: say only where
            raise SecretUnavailable(f"{what}: {file} is not UTF-8 text") from None
    raise SecretUnavailable(f"{what}: no {what}_env or {what}_file given")


def _read_secret_file(file: str, what: str) -> bytes:
    """At most `MAX_SECRET_BYTES` of `file`. A config may name anything: /dev/zero or a huge
    file would be read without end, a FIFO nobody writes would block davitd's thread for good.
    A pipe that has data within `PIPE_WAIT_SECONDS` (`--passphrase-file <(pass show x)`) is read."""
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            data = b""
            while len(data) <= MAX_SECRET_BYTES and (block := os.read(fd, MAX_SECRET_BYTES + 1 - len(data))):
                data += block
        else:
            data = _read_pipe(fd, file, what)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretUnavailable(f"{what}: {file} is larger than a secret can be ({MAX_SECRET_BYTES} bytes)")
    return data


def _read_pipe(fd: int, file: str, what: str) -> bytes:
    """What a pipe or device gives until its end, all within `PIPE_WAIT_SECONDS`: a writer that
    sends a byte and then holds the pipe open would otherwise keep the reader waiting for good
    (the notification task, davitd's event loop, a run's thread)."""
    deadline = time.monotonic() + PIPE_WAIT_SECONDS
    data = b""
    while len(data) <= MAX_SECRET_BYTES:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            said = "not all of it" if data else "nothing"
            raise SecretUnavailable(
                f"{what}: {file} is not a regular file, and {said} could be read from it within {PIPE_WAIT_SECONDS:.0f} s"
            )
        try:
            block = os.read(fd, MAX_SECRET_BYTES + 1 - len(data))
        except BlockingIOError:
            continue
        if not block:
            break
        data += block
    return data


def redact(text: str, *secrets: str) -> str:
    """`text` without URI credentials and without any of `secrets` (or their parts)."""
    out = strip_uri_credentials(text)
    for secret in secrets:
        if not secret:
            continue
        out = out.replace(secret, "***")
        for part in _credential_parts(secret):
            out = out.replace(part, "***")
    return out


def _credential_parts(secret: str) -> list[str]:
    match = URI_CREDENTIALS.search(secret)
    if not match:
        return []
    userinfo = match["userinfo"]
    parts = [userinfo]
    if ":" in userinfo:
        parts.append(userinfo.split(":", 1)[1])
    return [p for p in parts if len(p) >= 3]

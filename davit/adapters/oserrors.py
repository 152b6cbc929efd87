"""The OS errors an adapter's boundary may see, typed the same way at every boundary.

A peer's client library lets some `OSError`s through unwrapped (a refused connection, a
timeout, a CA file it cannot read), and the work inside a mapped block writes local files
too (a dump, a staged chunk). Whichever boundary catches one, it means the same thing: a full
disk is `StorageFull`; a connection refused, reset or timed out, or a name that did not
resolve, is the peer being unreachable (retryable); anything else (no permission, no such
file, a read-only file system) needs an operator and is permanent, naming the file.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from davit.domain.errors import DavitError, PermanentError, RetryableError, StorageFull

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
UNREACHABLE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EPIPE,
    }
)


def os_error(
    exc: OSError, doing: str, unreachable: type[RetryableError], refused: type[PermanentError], redact: Callable[[str], str]
) -> DavitError:
    """`exc`, raised while `doing`, as a davit error; every message passes through `redact`."""
    if exc.errno in FULL:
        return StorageFull(redact(str(exc.filename or doing)))
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | ConnectionError | socket.gaierror) or exc.errno in UNREACHABLE:
        return unreachable(redact(f"{doing}: {reason}"))
    where = f" ({exc.filename})" if exc.filename else ""
    return refused(redact(f"{doing}: {reason}{where}"))

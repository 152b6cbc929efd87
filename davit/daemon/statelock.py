"""The state directory's lock: one davitd per state directory, taken before anything else."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from davit.daemon.config import Settings
from davit.domain.errors import PermanentError


@contextmanager
def holding_state_lock(settings: Settings) -> Iterator[None]:
    """Hold the lock for the body. It comes first: a second davitd started by mistake must not
    open the log, make its key, serve metrics or write anything before it is refused."""
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:  # (not through a symlink planted in its place)
        fd = os.open(settings.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PermanentError(f"davitd's lock {settings.lock_path} cannot be opened: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PermanentError(f"another davitd is running with state directory {settings.state_dir}") from None
        yield
    finally:
        os.close(fd)

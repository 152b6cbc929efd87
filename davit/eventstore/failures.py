"""Which failures of an event-log write mean "the storage cannot take writes now".

A write that fails because the file system is full, over a file-size limit or quota, failing
I/O or read-only is not a wrong append: the same append can succeed once the operator makes
room. This module tells those failures apart from the rest and names them in davit's terms
(`EventLogFull`, `EventLogUnavailable`) with the state directory, so the daemon can wait them
out instead of dying. SQLite reports ENOSPC as SQLITE_FULL but EFBIG (`ulimit -f`) and EDQUOT
as a plain SQLITE_IOERR_WRITE, so an I/O error is checked against the file-size limit and the
free space of the state directory before it is called an I/O error.
"""

from __future__ import annotations

import errno
import os
import resource
import sqlite3
from pathlib import Path

from davit.domain.errors import DavitError, EventLogFull, EventLogUnavailable

# SQLite primary result codes (the low byte of an extended code).
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_IO_ERRNOS = frozenset({errno.EIO, errno.EROFS})
# Less room than this left in the state directory's file system: a failing write is a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def storage_failure(exc: BaseException, db_path: Path) -> DavitError | None:
    """The typed storage error behind `exc` (a sqlite3 or OS error, perhaps wrapped by
    SQLAlchemy as its `orig`), or None if `exc` is not a storage failure."""
    state_dir = str(db_path.parent)
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, OSError):
        if cause.errno in _FULL_ERRNOS:
            return EventLogFull(state_dir, os.strerror(cause.errno))
        if cause.errno in _IO_ERRNOS:
            return EventLogUnavailable(state_dir, os.strerror(cause.errno))
        return None
    if not isinstance(cause, sqlite3.Error):
        return None
    code = getattr(cause, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    name = getattr(cause, "sqlite_errorname", "") or f"SQLite error {code}"
    if primary == SQLITE_FULL:
        return EventLogFull(state_dir, f"the file system is full ({name})")
    if primary == SQLITE_IOERR:
        limit = _over_size_limit(db_path)
        if limit is not None:
            return EventLogFull(state_dir, limit)
        if _nearly_full(db_path.parent):
            return EventLogFull(state_dir, f"the file system is full or over quota ({name})")
        return EventLogUnavailable(state_dir, f"disk I/O error ({name})")
    if primary in (SQLITE_READONLY, SQLITE_CANTOPEN):
        return EventLogUnavailable(state_dir, f"{cause} ({name})")
    return None


def _over_size_limit(db_path: Path) -> str | None:
    """Why a write past this process's file-size limit failed, if that is what happened."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return None
    biggest = 0
    for suffix in ("", "-wal"):
        try:
            biggest = max(biggest, os.stat(f"{db_path}{suffix}").st_size)
        except OSError:
            continue
    # A write fails once it would cross the limit; the next page rarely exceeds 64 KiB.
    if biggest + (64 << 10) >= soft:
        return f"the log reached this process's file-size limit ({soft} bytes, ulimit -f)"
    return None


def _nearly_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL_BYTES

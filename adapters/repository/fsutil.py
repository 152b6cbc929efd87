"""Durable file writes: temporary name, fsync, rename, fsync of the directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from domain.errors import StorageFull


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write `data` so that `path` holds either nothing or all of it, even after power loss."""
    tmp = tmp_dir / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(exc, path) from exc


def storage_error(exc: OSError, where: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(str(where))
    return exc


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding `path` (one call, not one per file)."""
    import ctypes

    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (AttributeError, OSError):
        os.sync()
    finally:
        os.close(fd)

"""Durable file writes: temporary name, fsync, rename, fsync of the directory.

Files are created 0600 and directories 0700 by mode, not left to the umask: what a repository
holds is as secret as what was backed up, and the Repository class is also used as a library
(tests, bench) by processes whose umask davit does not set.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from davit.domain.errors import StorageFull

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_dirs(path: Path) -> None:
    """`path` and its missing parents, each created 0700 (one that exists is left as it is)."""
    if path.is_dir():
        return
    if not path.parent.is_dir() and path.parent != path:
        make_dirs(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
    else:
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask; this is not


def open_new(path: Path, flags: int = 0) -> int:
    """A descriptor of a new file at `path`, 0600 whatever the umask (truncated if it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


class NotRegularFile(ValueError):
    """A path that should hold a file davit wrote is something else (a FIFO, a device, a directory)."""


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file: a symlink is not followed (ELOOP) and a
    FIFO is not waited on (`NotRegularFile`). Anyone who can write a repository can plant one, and
    a reader blocked in open() may hold the repository's lock for good."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")


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
        with open(open_new(tmp), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        make_dirs(path.parent)
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

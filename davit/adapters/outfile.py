"""A file written from a stream of blocks that appears whole or not at all: the blocks go to a
private temporary name beside it (O_EXCL|O_NOFOLLOW, 0600), which is fsynced and renamed over
the destination only once the last block is written; a failure removes the temporary file.
Exports use it so an interrupted one never leaves a file that looks complete.

The directory it goes into is reached by `open_parent`, one component at a time, and every
later step works relative to that descriptor: an export is often written into a shared place
(`/tmp/dump`, a backup share) by root, and a symbolic link someone else planted on the way
(`/tmp/share -> /etc`) must not carry the file elsewhere.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from davit.domain.errors import PermanentError

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _trusted_link(link: os.stat_result, where: os.stat_result) -> bool:
    """A link only root or this user could have put there: theirs, in a directory of theirs
    that nobody else may write to, or that is sticky (others cannot replace a link they do not own)."""
    ours = (0, os.geteuid())
    if link.st_uid not in ours:
        return False
    others_write = where.st_mode & 0o022 or where.st_uid not in ours
    return not others_write or bool(where.st_mode & stat.S_ISVTX)


def open_parent(path: Path) -> int:
    """A descriptor of the directory `path` is to be written into, walked from `/` one component
    at a time: a directory is opened O_NOFOLLOW, a symbolic link is followed only when
    `_trusted_link` says root or this user made it; another is refused, naming it."""
    parent = path.parent if path.is_absolute() else Path.cwd() / path.parent
    fd = os.open("/", DIRECTORY)
    walked = Path("/")
    try:
        for part in parent.parts[1:]:
            walked = walked / part
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise PermanentError(f"{path}: directory {walked} does not exist") from None
            flags = DIRECTORY | os.O_NOFOLLOW
            if stat.S_ISLNK(st.st_mode):
                if not _trusted_link(st, os.fstat(fd)):
                    raise PermanentError(
                        f"{path}: {walked} is a symbolic link that someone other than root or this user could have "
                        "planted (its owner or its directory's): refused; name the directory it points to"
                    )
                flags = DIRECTORY
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except NotADirectoryError:
                raise PermanentError(f"{path}: {walked} is not a directory") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomically(path: Path, blocks: Iterable[bytes], mode: int = 0o600) -> int:
    """Write `blocks` to `path` (replacing a file there, or a symlink there: never followed) with
    permissions `mode` (davit's outputs are its owner's alone unless a reader needs otherwise);
    the bytes written."""
    parent = open_parent(path)
    try:
        tmp = f".{path.name}.davit-partial-{secrets.token_hex(6)}"
        fd = os.open(tmp, NEW_FILE, 0o600, dir_fd=parent)
        size = 0
        try:
            try:
                if mode != 0o600:
                    os.fchmod(fd, mode)  # (the umask would narrow it)
                for block in blocks:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
                    size += len(block)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except FileNotFoundError:
                pass
            raise
        os.fsync(parent)
    finally:
        os.close(parent)
    return size

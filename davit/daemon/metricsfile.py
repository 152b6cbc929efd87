"""Writing the metrics for node_exporter's textfile collector: whole or not at all, never
through a link.

node_exporter reads every `*.prom` file of its directory at each scrape, so a half-written
file would be read as broken metrics: the text goes to a temporary name in the same directory
(not ending in `.prom`, so the collector passes over it), is fsynced, and is renamed over the
file; the directory is fsynced after. That directory is often writable by others (a group
node_exporter and several exporters share), so everything in it is done relative to a
descriptor of it, the temporary file is created `O_EXCL | O_NOFOLLOW`, and a symlink (or any
other thing than a regular file) at the file's name is refused: the file is not written, and
the link is left for the operator to look at. `rename` itself replaces a name and never follows
it, so a link planted between the check and the rename is replaced, not written through.

The file is made readable by all (0644): node_exporter runs as another user, and the metrics
hold no secret (names of jobs and repositories, figures, times).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from davit.domain.errors import PermanentError

FILE_MODE = 0o644


class TextfileRefused(PermanentError):
    """The textfile's name holds something davitd will not replace (a symlink, a directory)."""


def write_textfile(path: Path, text: bytes) -> None:
    """Replace `path` with `text`, atomically and durably. `TextfileRefused` if something
    other than a regular file is at `path`; `OSError` if the directory does not take it."""
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _refuse_non_regular(dirfd, path)
        temp = f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dirfd)
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # (davitd's umask would leave it 0600, unreadable to node_exporter)
                view = memoryview(text)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, path.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dirfd)
            except OSError:
                pass
            raise
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _refuse_non_regular(dirfd: int, path: Path) -> None:
    try:
        mode = os.stat(path.name, dir_fd=dirfd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise TextfileRefused(
            f"metrics textfile {path} is a symbolic link; not written through it (remove it to let davitd write)"
        )
    if not stat.S_ISREG(mode):
        raise TextfileRefused(f"metrics textfile {path} is not a regular file; not replaced")

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
import stat
from pathlib import Path

from davit.adapters.outfile import write_atomically
from davit.domain.errors import PermanentError

FILE_MODE = 0o644


class TextfileRefused(PermanentError):
    """The textfile's name holds something davitd will not replace (a symlink, a directory)."""


def write_textfile(path: Path, text: bytes) -> None:
    """Replace `path` with `text`, atomically and durably. `TextfileRefused` if something
    other than a regular file is at `path`; `OSError` (or a `PermanentError` naming a planted
    link above it) if the directory does not take it."""
    _refuse_non_regular(path)
    write_atomically(path, [text], mode=FILE_MODE)


def _refuse_non_regular(path: Path) -> None:
    try:
        mode = os.stat(path, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise TextfileRefused(
            f"metrics textfile {path} is a symbolic link; not written through it (remove it to let davitd write)"
        )
    if not stat.S_ISREG(mode):
        raise TextfileRefused(f"metrics textfile {path} is not a regular file; not replaced")

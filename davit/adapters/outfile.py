"""A file written from a stream of blocks that appears whole or not at all: the blocks go to a
private temporary name beside it (O_EXCL|O_NOFOLLOW, 0600), which is fsynced and renamed over
the destination only once the last block is written; a failure removes the temporary file.
Exports use it so an interrupted one never leaves a file that looks complete."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomically(path: Path, blocks: Iterable[bytes]) -> int:
    """Write `blocks` to `path` (replacing a file there); the bytes written."""
    tmp = path.parent / f".{path.name}.davit-partial-{secrets.token_hex(6)}"
    fd = os.open(tmp, NEW_FILE, 0o600)
    size = 0
    try:
        try:
            for block in blocks:
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                size += len(block)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(parent)
    finally:
        os.close(parent)
    return size

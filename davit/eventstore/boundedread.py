"""Reading a small file that someone else may have written, without trusting its size.

The job files, `davit.toml` and the log key are read whole before they are parsed; each has a
cap, and a file over it is refused, never read into memory. `read_bounded` is that read, once:
the size `fstat` gives is checked before a byte is read, and at most one byte more than the
cap is read, so a file that grows between the two is refused too. `file_kind` names what stands
where a regular file should (a FIFO, a device) in the refusal, for the job files and the log.

It lives in `eventstore` because that is the lowest layer with I/O that both of its users may
import: the log key (`davit/eventstore/logkey.py`) and the daemon's config and job files.
"""

from __future__ import annotations

import os
import stat

_READ = 1 << 16


class TooLarge(Exception):
    """A file over its cap; the message says by how much, and that it was not read."""


def read_bounded(fd: int, limit: int, what: str) -> bytes:
    """All of the open file `fd`; `TooLarge` if it holds more than `limit` bytes. `what` names
    such a file in the message ("a job file")."""
    size = os.fstat(fd).st_size
    if size > limit:
        raise TooLarge(f"{size} bytes, larger than the {limit} {what} may be; not read")
    chunks: list[bytes] = []
    got = 0
    while got <= limit:
        chunk = os.read(fd, min(_READ, limit + 1 - got))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        got += len(chunk)
    raise TooLarge(f"larger than the {limit} bytes {what} may be; not read")  # it grew after the fstat


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message: "a FIFO", "a directory", ..."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return f"file type {stat.S_IFMT(mode):o}"

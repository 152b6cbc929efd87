"""A part of a `compose` snapshot as the byte stream the migration's pipeline reads from `tar c`:
what lets `compose.restore` send a snapshot through `pipeline.move_item` (content-addressed
chunks, only those the target's store lacks sent, unpacked there as a migration's are).

A volume's or bind directory's part (`volumes/<key>`, `binds/<n>`) becomes a GNU tar stream
made here from the snapshot's entries, its members named `./REL` as `tar -c -C DIR .` names
them (a bind that is one file: a single member named by the file's base name); an image's part
(`images/<id>.tar`) is the file's own content, the engine's export. The stream is a function of
the snapshot alone (sorted walk order, fixed header fields, no clock), so a resumed restore cuts
the same chunks and sends only what the store lacks.

The entries come through `treecheck.checked` (names without `..` or absolute parts, nothing
under a symlink or a file, hard links to earlier entries only), each file's content is read
from verified chunks and must add up to its recorded size: a crafted snapshot fails the stream
naming the entry, and the pipeline fails the item, never unpacking a partial one as whole. A
symlink is sent as the link it is; the target's unpack (GNU tar for binds, confined by
`confined.py`; a helper container for volumes) never writes through one. A hard link to an
entry outside the part goes as a plain file with its content.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from davit.adapters.files.treecheck import checked, parsed
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.snapshots import SnapshotInfo
from davit.adapters.repository.treeformat import BLOCK, CHAR, DIR, FIFO, FILE, LINK, Entry
from davit.domain.errors import CorruptSnapshot

BLOCK_SIZE = tarfile.BLOCKSIZE
_TYPES = {DIR: tarfile.DIRTYPE, FILE: tarfile.REGTYPE, LINK: tarfile.SYMTYPE, FIFO: tarfile.FIFOTYPE}
_TYPES.update({CHAR: tarfile.CHRTYPE, BLOCK: tarfile.BLKTYPE})


def snapshot_entries(repo: Repository, snap: SnapshotInfo) -> Iterator[Entry]:
    """Every entry of the snapshot's tree, each checked before it is handed over."""
    return checked(parsed(repo.open_tree(snap), snap.id), snap.id)


def part_entries(entries: Iterable[Entry], prefix: str) -> Iterator[Entry]:
    """The entries at and under `prefix`, re-rooted (`prefix` itself is "."); a hard link to
    an entry outside the part loses its link (it goes with its own content)."""
    below = prefix + "/"
    for entry in entries:
        if entry.path == prefix:
            entry.path = "."
        elif entry.path.startswith(below):
            entry.path = entry.path[len(below) :]
        else:
            continue
        if entry.hardlink_to is not None:
            entry.hardlink_to = entry.hardlink_to[len(below) :] if entry.hardlink_to.startswith(below) else None
        yield entry


def content(repo: Repository, snapshot_id: str, path: str, chunks: list[str], size: int) -> Iterator[bytes]:
    """A file's content from its verified chunks; `CorruptSnapshot` unless it adds up to `size`."""
    done = 0
    for chunk in chunks:
        data = repo.read_chunk(bytes.fromhex(chunk))
        done += len(data)
        if done > size:
            break
        yield data
    if done != size:
        raise CorruptSnapshot(snapshot_id, path, f"its chunks hold {done} bytes, its entry says {size}")


def _member(entry: Entry, name: str, snapshot_id: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = entry.mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""  # numeric owners, as `tar c --numeric-owner` writes
    info.mtime = max(entry.mtime_ns, 0) // 1_000_000_000
    kind = _TYPES.get(entry.type)
    if kind is None:
        raise CorruptSnapshot(snapshot_id, entry.path, f"unknown entry type {entry.type!r}")
    info.type = kind
    if entry.type == FILE:
        info.size = entry.size
    elif entry.type == LINK:
        info.linkname = entry.target or ""
    elif entry.type in (CHAR, BLOCK):
        info.devmajor, info.devminor = os.major(entry.rdev), os.minor(entry.rdev)
    return info


def tar_stream(repo: Repository, snapshot_id: str, entries: Iterable[Entry], single: str | None = None) -> Iterator[bytes]:
    """The GNU tar stream of a part's re-rooted entries: members `./REL` (the root `./`), or,
    with `single`, the part's one file as a member of that name."""
    for entry in entries:
        name = single if single is not None else ("./" if entry.path == "." else f"./{entry.path}")
        if single is not None and (entry.path != "." or entry.type != FILE):
            raise CorruptSnapshot(snapshot_id, entry.path, "a bind stored as one file holds something else")
        info = _member(entry, name, snapshot_id)
        if entry.hardlink_to is not None and entry.type != DIR:
            info.type, info.size, info.linkname = tarfile.LNKTYPE, 0, f"./{entry.hardlink_to}"
        yield info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        if info.type == tarfile.REGTYPE:
            yield from content(repo, snapshot_id, entry.path, entry.chunks, entry.size)
            if entry.size % BLOCK_SIZE:
                yield b"\0" * (BLOCK_SIZE - entry.size % BLOCK_SIZE)
    yield b"\0" * (BLOCK_SIZE * 2)


class _GeneratorReader(io.RawIOBase):
    """A generator of byte strings as a raw stream; `stop` ends it at the next read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")
        self.stopped = threading.Event()
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            if self.stopped.is_set():
                return 0
            try:
                self._left = memoryview(next(self._chunks))
            except StopIteration:
                self.ended = True
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class StreamProcess:
    """What `pipeline._Reader` uses of a `Popen` (`stdout`, `stderr`, `wait`, `poll`, `kill`),
    for a stream made in this process: read in the reader's thread; an error in making it is
    raised from `stdout.read`, which the pipeline hands to the run as the item's failure."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._raw = _GeneratorReader(chunks)
        self.stdout = io.BufferedReader(self._raw, buffer_size=1 << 20)
        self.stderr = io.BytesIO()
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return 0 if self._raw.ended or self._raw.stopped.is_set() else None

    def kill(self) -> None:
        self._raw.stopped.set()

    def wait(self) -> int:
        return 0


Source = Callable[[], Iterator[bytes]]

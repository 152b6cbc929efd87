"""What a snapshot tree is: one JSON line per entry, in walk order, and how it is read back.

The repository owns this format (pruning and `davit verify` read the `c` key of every line;
restores and the files cache read whole entries), so it lives here rather than with any one
adapter: the files and docker adapters write it, the MongoDB and Weaviate adapters write lines
of its shape. How the lines are stored on disk (compressed, sealed) is `trees.py`.

The walk visits each directory's entries sorted by name, depth first, directory before its
children. That order is the lexicographic order of the paths' component tuples, so a cursor
is simply "the last path done", and the previous snapshot's tree can be merge-joined with
the current walk in constant memory (the files cache: unchanged files are not read again).
"""

from __future__ import annotations

import base64
import io
import json
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

FILE, DIR, LINK = "f", "d", "l"
FIFO, CHAR, BLOCK = "p", "c", "b"  # restored as root only, and only inside the target
SPECIAL = (FIFO, CHAR, BLOCK)
TYPES = (FILE, DIR, LINK, *SPECIAL)
TYPE_OF_MODE = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: LINK,
    stat.S_IFIFO: FIFO,
    stat.S_IFCHR: CHAR,
    stat.S_IFBLK: BLOCK,
}

# One encoder for every line: `json.dumps` with `separators` builds a new encoder per call,
# a cost paid per entry of a tree of millions. Same bytes either way.
_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"))


@dataclass
class Entry:
    path: str  # relative, "/"-separated; "." is the root directory itself
    type: str
    mode: int
    mtime_ns: int
    size: int = 0
    uid: int = 0
    gid: int = 0
    inode: int = 0
    ctime_ns: int = 0
    target: str | None = None
    chunks: list[str] = field(default_factory=list)
    # Hard links: a non-directory with more than one link (a file, and also a symlink, FIFO or
    # device node) records its link count and device, and a later path to the same inode names
    # the first path it was seen at. A file's content is stored too (at no cost: same chunks), so
    # a partial or cross-device restore still has every file whole.
    nlink: int = 1
    dev: int = 0
    hardlink_to: str | None = None
    # A device node's device number (`st_rdev`), for CHAR and BLOCK entries.
    rdev: int = 0
    # Extended attributes of any entry, every namespace read (user, trusted, security, and the
    # POSIX ACLs `system.posix_acl_access` / `system.posix_acl_default`): name -> value, the value
    # base64-encoded in the stored line. Empty for most entries, and then not stored.
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        return walk_key(self.path)

    def to_line(self) -> bytes:
        d: dict[str, Any] = {"p": self.path, "t": self.type, "m": self.mode, "mt": self.mtime_ns, "u": self.uid, "g": self.gid}
        if self.type == FILE:
            d.update(s=self.size, i=self.inode, ct=self.ctime_ns, c=self.chunks)
        elif self.type == LINK:
            d["l"] = self.target
        elif self.type in (CHAR, BLOCK):
            d["r"] = self.rdev
        if self.type != DIR:
            if self.nlink > 1:
                d.update(n=self.nlink, dv=self.dev)
            if self.hardlink_to is not None:
                d["h"] = self.hardlink_to
        if self.xattrs:
            d["x"] = {name: base64.b64encode(value).decode() for name, value in sorted(self.xattrs.items())}
        return _LINE_ENCODER.encode(d).encode() + b"\n"

    @staticmethod
    def from_line(line: bytes) -> Entry:
        d = json.loads(line)
        return Entry(
            path=d["p"],
            type=d["t"],
            mode=d["m"],
            mtime_ns=d["mt"],
            size=d.get("s", 0),
            uid=d.get("u", 0),
            gid=d.get("g", 0),
            inode=d.get("i", 0),
            ctime_ns=d.get("ct", 0),
            target=d.get("l"),
            chunks=d.get("c", []),
            nlink=d.get("n", 1),
            dev=d.get("dv", 0),
            hardlink_to=d.get("h"),
            rdev=d.get("r", 0),
            xattrs={name: base64.b64decode(value) for name, value in x.items()} if (x := d.get("x")) else {},
        )

    def unchanged_since(self, other: Entry) -> bool:
        """The files-cache test: same size, mtime, ctime and inode means same content."""
        return (
            other.type == FILE
            and self.size == other.size
            and self.mtime_ns == other.mtime_ns
            and self.ctime_ns == other.ctime_ns
            and self.inode == other.inode
        )


def walk_key(path: str) -> tuple[str, ...]:
    return () if path == "." else tuple(path.split("/"))


def read_tree_zst(data: bytes) -> Iterator[Entry]:
    """Entries of a zstd-compressed tree, decompressed as they are read (bounded memory)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    return read_lines(io.BufferedReader(reader, buffer_size=1 << 16))


def read_lines(lines: Iterable[bytes]) -> Iterator[Entry]:
    for line in lines:
        if line.strip():
            yield Entry.from_line(line)


_DECODER = json.JSONDecoder()


def read_counts(lines: Iterable[bytes]) -> Iterator[tuple[str, int, list[str]]]:
    """The type, size and chunk ids (hex) of each line, without building an `Entry`: what a
    publish reads every line of a new tree for (its stats and the check that every chunk it
    names exists). A third less time than `read_lines`: the dataclass per line and `json.loads`
    guessing the encoding of bytes were that much of a publish of 11k files."""
    for line in lines:
        if line.strip():
            d = _DECODER.decode(line.decode())
            yield d["t"], d.get("s", 0), d.get("c", [])


@dataclass
class TreeStats:
    """What a snapshot's manifest says its tree holds (`stats`): entries of each type, the
    files' bytes and the chunk references, counted as the lines say them (`s` and `c` are
    written for files only, see `Entry.to_line`). Counted by the store step as it writes each
    line (`count`), or by reading a staged tree back (`count_line`): the same figures."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    specials: int = 0  # FIFOs and device nodes
    bytes: int = 0
    chunk_refs: int = 0

    def count(self, entry: Entry) -> None:
        """`entry`, as its line (`entry.to_line()`) holds it."""
        if entry.type == FILE:
            self.count_line(FILE, entry.size, len(entry.chunks))
        else:
            self.count_line(entry.type, 0, 0)

    def count_line(self, kind: str, size: int, chunk_refs: int) -> None:
        if kind == FILE:
            self.files += 1
        elif kind == DIR:
            self.dirs += 1
        elif kind == LINK:
            self.links += 1
        else:
            self.specials += 1
        self.bytes += size
        self.chunk_refs += chunk_refs

    def to_json(self) -> dict[str, int]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "links": self.links,
            "specials": self.specials,
            "bytes": self.bytes,
            "chunk_refs": self.chunk_refs,
        }


class ParentCursor:
    """Walks a previous snapshot's tree alongside the current walk (both in walk order)."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._entries = entries
        self._current: Entry | None = next(entries, None)

    def find(self, key: tuple[str, ...]) -> Entry | None:
        while self._current is not None and self._current.key < key:
            self._current = next(self._entries, None)
        if self._current is not None and self._current.key == key:
            return self._current
        return None

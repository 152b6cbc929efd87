"""A snapshot's tree on disk, written and read as a stream so memory stays bounded whatever the
number of entries (a tree of ten million files is well over a gigabyte of JSON lines).

Stored form: the zstd-compressed JSON lines, as is in a plain repository. In an encrypted one
the compressed stream is cut into segments of `SEGMENT` bytes, each sealed on its own (see
`crypto.py`) and stored as `header (4 bytes, big-endian: the top bit marks the last segment,
the rest is the length) || sealed segment` after a magic line. A segment's associated data is
the snapshot id, its index and whether it is the last, so segments cannot be reordered, moved
to another snapshot, or cut off at the end unnoticed.
The manifest records the sha256 of the stored file; a reader checks it before handing out a
single line.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from davit.adapters.repository.crypto import RepositoryKey, SealedBlobError
from davit.adapters.repository.fsutil import NotRegularFile, fsync_dir, make_dirs, open_new, open_regular, storage_error
from davit.domain.errors import CorruptChunk

SEALED_MAGIC = b"DAVITSEALEDTREE2\n"
SEGMENT = 1 << 20
_LENGTH = struct.Struct(">I")
_LAST = 1 << 31
_READ = 1 << 20


def _associated(snapshot_id: str, index: int, last: bool) -> bytes:
    return snapshot_id.encode() + struct.pack(">QB", index, last)


class TreeWriter:
    """Writes a stored tree to a temporary file; `commit` makes it durable under its name."""

    def __init__(self, path: Path, tmp_dir: Path, snapshot_id: str, key: RepositoryKey | None) -> None:
        self.path = path
        self._tmp = tmp_dir / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        self._fh = open(open_new(self._tmp), "wb")  # noqa: SIM115 - closed in commit/abort
        self._sha = hashlib.sha256()
        self._key = key
        self._snapshot_id = snapshot_id
        self._pending = bytearray()
        self._index = 0
        if key is not None:
            self._emit(SEALED_MAGIC)

    def write_compressed(self, data: bytes) -> None:
        if self._key is None:
            self._emit(data)
            return
        self._pending += data
        while len(self._pending) > SEGMENT:
            self._seal(bytes(self._pending[:SEGMENT]), last=False)
            del self._pending[:SEGMENT]

    def commit(self) -> str:
        """Flush, fsync, rename into place; the sha256 of the stored bytes."""
        try:
            if self._key is not None:
                self._seal(bytes(self._pending), last=True)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            make_dirs(self.path.parent)
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, self.path) from exc
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def _seal(self, segment: bytes, last: bool) -> None:
        assert self._key is not None
        sealed = self._key.seal(segment, _associated(self._snapshot_id, self._index, last))
        self._emit(_LENGTH.pack(len(sealed) | (_LAST if last else 0)) + sealed)
        self._index += 1

    def _emit(self, data: bytes) -> None:
        self._sha.update(data)
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, self.path) from exc


def write_plain_tree(writer: TreeWriter, plain: BinaryIO, level: int) -> None:
    """Compress the JSON lines read from `plain` into `writer`, a block at a time."""
    compressor = zstandard.ZstdCompressor(level=level).compressobj()
    while block := plain.read(_READ):
        out = compressor.compress(block)
        if out:
            writer.write_compressed(out)
    writer.write_compressed(compressor.flush())


def _open_stored(path: Path) -> BinaryIO:
    try:
        return open_regular(path)
    except NotRegularFile:
        raise CorruptChunk("(tree)", str(path.parent), "snapshot tree is not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptChunk("(tree)", str(path.parent), "snapshot tree is a symbolic link") from None
        raise


def check_stored(path: Path, expected_sha256: str | None) -> None:
    sha = hashlib.sha256()
    with _open_stored(path) as fh:
        while block := fh.read(_READ):
            sha.update(block)
    if sha.hexdigest() != expected_sha256:
        raise CorruptChunk("(tree)", str(path.parent), "snapshot tree does not match its manifest")


def compressed_stream(
    path: Path, snapshot_id: str, key: RepositoryKey | None, encrypted: bool, key_required: Exception
) -> BinaryIO:
    """The zstd stream of a stored tree (already checked against its manifest)."""
    fh = _open_stored(path)  # handed to the caller inside the returned stream
    head = fh.read(len(SEALED_MAGIC))
    if head == SEALED_MAGIC:
        if key is None:
            fh.close()
            raise key_required
        return io.BufferedReader(_SegmentReader(fh, path, snapshot_id, key), buffer_size=_READ)
    if encrypted:
        fh.close()
        raise CorruptChunk("(tree)", str(path.parent), "tree of an encrypted repository is stored unsealed")
    fh.seek(0)
    return fh


def plain_lines(compressed: BinaryIO) -> BinaryIO:
    """The JSON lines of a compressed tree stream, decompressed as they are read."""
    reader = zstandard.ZstdDecompressor().stream_reader(compressed, closefd=True)
    return io.BufferedReader(reader, buffer_size=1 << 16)


class _SegmentReader(io.RawIOBase):
    """Opens the sealed segments of a stored tree one at a time, in order."""

    def __init__(self, fh: BinaryIO, path: Path, snapshot_id: str, key: RepositoryKey) -> None:
        self._fh, self._path, self._snapshot_id, self._key = fh, path, snapshot_id, key
        self._segments = self._open_segments()
        self._current = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while self._offset >= len(self._current):
            nxt = next(self._segments, None)
            if nxt is None:
                return 0
            self._current, self._offset = nxt, 0
        n = min(len(buffer), len(self._current) - self._offset)
        buffer[:n] = self._current[self._offset : self._offset + n]
        self._offset += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()

    def _open_segments(self) -> Iterator[bytes]:
        index = 0
        while True:
            head = self._fh.read(_LENGTH.size)
            if len(head) < _LENGTH.size:
                raise self._corrupt("sealed snapshot tree is cut short")
            header = _LENGTH.unpack(head)[0]
            last = bool(header & _LAST)
            sealed = self._fh.read(header & ~_LAST)
            try:
                plain = self._key.open_sealed(sealed, _associated(self._snapshot_id, index, last))
            except SealedBlobError:
                raise self._corrupt(f"sealed snapshot tree does not open at segment {index}") from None
            yield plain
            if last:
                if self._fh.read(1):
                    raise self._corrupt("sealed snapshot tree has bytes after its last segment")
                return
            index += 1

    def _corrupt(self, reason: str) -> CorruptChunk:
        return CorruptChunk("(tree)", str(self._path.parent), reason)

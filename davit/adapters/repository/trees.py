"""A snapshot's tree on disk, written and read as a stream so memory stays bounded whatever the
number of entries (a tree of ten million files is well over a gigabyte of JSON lines).

Stored form: the zstd-compressed JSON lines, as is in a plain repository. In an encrypted one
the compressed stream is cut into segments of `SEGMENT` bytes, each sealed on its own (see
`crypto.py`) and stored as `header (4 bytes, big-endian: the top bit marks the last segment,
the rest is the length) || sealed segment` after a magic line. A segment's associated data is
the snapshot id, its index and whether it is the last, so segments cannot be reordered, moved
to another snapshot, or cut off at the end unnoticed.
The manifest records the sha256 of the stored object; a reader fetches it into a local
temporary file (one read of the repository, whatever the backend) and checks it there before
handing out a single line, then streams from that same file.
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

from davit.adapters.repository.backend import Backend, ObjectMissing, check_key
from davit.adapters.repository.crypto import RepositoryKey, SealedBlobError
from davit.adapters.repository.fsutil import NotRegularFile, make_dirs, open_new, storage_error
from davit.domain.errors import BackendDenied, CorruptChunk

SEALED_MAGIC = b"DAVITSEALEDTREE2\n"
SEGMENT = 1 << 20
_LENGTH = struct.Struct(">I")
_LAST = 1 << 31
_READ = 1 << 20


def _associated(snapshot_id: str, index: int, last: bool) -> bytes:
    return snapshot_id.encode() + struct.pack(">QB", index, last)


TREE = "tree.jsonl.zst"


def tree_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}/{TREE}"


class TreeWriter:
    """Writes a stored tree to a local temporary file; `commit` puts it into the repository.

    The tree is created, not replaced (`put_if_absent`): a backup-only credential may create
    objects but not overwrite them (SFTP with posix-rename denied, an S3 bucket whose policy
    forbids it). A tree found in place is an earlier attempt of this same publish (the id is
    the run's, and no manifest vouches for it yet, see `Repository._refuse_existing`); it is
    kept if it holds the same tree (the same compressed stream: an encrypted tree is sealed
    with fresh nonces on every attempt, so its stored bytes differ), else replaced."""

    def __init__(self, backend: Backend, spool_dir: Path, snapshot_id: str, key: RepositoryKey | None) -> None:
        self.backend = backend
        self.key = check_key(tree_key(snapshot_id))
        make_dirs(spool_dir)
        self._tmp = spool_dir / f".{TREE}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        self._fh = open(open_new(self._tmp), "wb")  # noqa: SIM115 - closed in commit/abort
        self._sha = hashlib.sha256()  # of the stored bytes: the manifest records it
        self._zst_sha = hashlib.sha256()  # of the compressed stream, before any sealing
        self._key = key
        self._snapshot_id = snapshot_id
        self._pending = bytearray()
        self._index = 0
        if key is not None:
            self._emit(SEALED_MAGIC)

    def write_compressed(self, data: bytes) -> None:
        self._zst_sha.update(data)
        if self._key is None:
            self._emit(data)
            return
        self._pending += data
        while len(self._pending) > SEGMENT:
            self._seal(bytes(self._pending[:SEGMENT]), last=False)
            del self._pending[:SEGMENT]

    def commit(self) -> str:
        """Put the tree into the repository (durable once this returns); the sha256 of the
        stored bytes."""
        try:
            if self._key is not None:
                self._seal(bytes(self._pending), last=True)
            self._fh.close()
            stored = self._sha.hexdigest()
            if not self.backend.put_if_absent(self.key, self._tmp):
                stored = self._settle_existing(stored)
        except OSError as exc:
            raise storage_error(exc, self._tmp) from exc
        finally:
            self.abort()
        return stored

    def _settle_existing(self, ours: str) -> str:
        """The sha256 of the tree to publish when one is in place already: the one there if it
        holds our tree, else ours, put over it (`BackendDenied` if the credential may not)."""
        try:
            fh = fetch_tree(self.backend, self._snapshot_id, self._tmp.parent, self.backend.where)
        except CorruptChunk:
            fh = None  # gone again, or not a regular file: replace it
        if fh is not None:
            with fh:
                there = _sha256_of(fh)
                if there == ours or self._holds_our_tree(fh):
                    return there
        try:
            self.backend.put(self.key, self._tmp)
        except BackendDenied as exc:
            raise BackendDenied(
                self.backend.where,
                f"put {self.key}",
                "a different tree of this snapshot is there from an earlier attempt, and this credential may not "
                f"replace it ({exc}); nothing was published: run the job again (a new run publishes under a new id)",
            ) from None
        return ours

    def _holds_our_tree(self, fh: BinaryIO) -> bool:
        """Whether the stored tree in `fh` unseals to the compressed stream this writer wrote."""
        fh.seek(0)
        where = self.backend.where
        try:
            stream = compressed_stream(
                fh, where, self._snapshot_id, self._key, self._key is not None, CorruptChunk("(tree)", where, "sealed")
            )
            return _sha256_of(stream) == self._zst_sha.hexdigest()
        except CorruptChunk:
            return False

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
            raise storage_error(exc, self._tmp) from exc


def _sha256_of(fh: BinaryIO) -> str:
    sha = hashlib.sha256()
    while block := fh.read(_READ):
        sha.update(block)
    return sha.hexdigest()


# zstd level of a tree's JSON lines, whatever level the repository's chunks use (the setting
# `compression_level` is documented as the chunks'). Trees are mostly hex chunk ids and paths:
# level 1 compressed them both faster and smaller than level 3 (bench tree of 11k files: 2.2 MB
# of lines to 575 KB in 0.009 s against 645 KB in 0.021 s; 21k system files: 1.10 MB in 0.016 s
# against 1.19 MB in 0.023 s), and the compression is part of every publish. Any level reads back alike.
TREE_LEVEL = 1


def write_plain_tree(writer: TreeWriter, plain: BinaryIO, level: int = TREE_LEVEL) -> None:
    """Compress the JSON lines read from `plain` into `writer`, a block at a time."""
    compressor = zstandard.ZstdCompressor(level=level).compressobj()
    while block := plain.read(_READ):
        out = compressor.compress(block)
        if out:
            writer.write_compressed(out)
    writer.write_compressed(compressor.flush())


def fetch_tree(backend: Backend, snapshot_id: str, spool_dir: Path, where: str) -> BinaryIO:
    """A snapshot's stored tree, fetched whole into an unnamed local file, open for reading.
    `CorruptChunk` (naming `where`, the snapshot) if it is missing or, in a local repository,
    a symlink or a FIFO (never followed, never waited on: see `LocalBackend`)."""
    make_dirs(spool_dir)
    dst = spool_dir / f".{TREE}.read.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        backend.get_to(tree_key(snapshot_id), dst)
        fh = open(dst, "rb")  # noqa: SIM115 - handed to the caller
    except ObjectMissing:
        raise CorruptChunk("(tree)", where, "snapshot tree is missing") from None
    except NotRegularFile:
        raise CorruptChunk("(tree)", where, "snapshot tree is not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptChunk("(tree)", where, "snapshot tree is a symbolic link") from None
        raise
    finally:
        dst.unlink(missing_ok=True)  # read through `fh`: nothing is left behind however it ends
    return fh


def check_stored(fh: BinaryIO, expected_sha256: str | None, where: str) -> None:
    """`CorruptChunk` unless the stored tree read from `fh` has the sha256 its manifest records;
    `fh` is left at its start."""
    sha = hashlib.sha256()
    while block := fh.read(_READ):
        sha.update(block)
    fh.seek(0)
    if sha.hexdigest() != expected_sha256:
        fh.close()
        raise CorruptChunk("(tree)", where, "snapshot tree does not match its manifest")


def compressed_stream(
    fh: BinaryIO, where: str, snapshot_id: str, key: RepositoryKey | None, encrypted: bool, key_required: Exception
) -> BinaryIO:
    """The zstd stream of the stored tree in `fh` (already checked against its manifest); `fh`
    is closed with the stream."""
    head = fh.read(len(SEALED_MAGIC))
    if head == SEALED_MAGIC:
        if key is None:
            fh.close()
            raise key_required
        return io.BufferedReader(_SegmentReader(fh, where, snapshot_id, key), buffer_size=_READ)
    if encrypted:
        fh.close()
        raise CorruptChunk("(tree)", where, "tree of an encrypted repository is stored unsealed")
    fh.seek(0)
    return fh


def plain_lines(compressed: BinaryIO) -> BinaryIO:
    """The JSON lines of a compressed tree stream, decompressed as they are read."""
    reader = zstandard.ZstdDecompressor().stream_reader(compressed, closefd=True)
    return io.BufferedReader(reader, buffer_size=1 << 16)


class _SegmentReader(io.RawIOBase):
    """Opens the sealed segments of a stored tree one at a time, in order."""

    def __init__(self, fh: BinaryIO, where: str, snapshot_id: str, key: RepositoryKey) -> None:
        self._fh, self._where, self._snapshot_id, self._key = fh, where, snapshot_id, key
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
        return CorruptChunk("(tree)", self._where, reason)

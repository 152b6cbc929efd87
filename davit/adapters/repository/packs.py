"""Pack files and their indexes: many compressed chunks per file, so a backup writes a few
large files instead of one small file per chunk.

A pack is the concatenation of stored blobs. Its index (`index/<pack>.idx`) lists, per blob,
the chunk id (sha256 of the plain bytes), offset, stored length, plain length and codec. A
pack is spooled to a local temporary file, then created in the repository whole
(`Backend.put_if_absent`: a hard link of the spool on a local repository, an upload on a
remote one), and only then is its index created the same way: an index in the repository
always names a complete pack.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from davit.adapters.repository.backend import Backend
from davit.adapters.repository.fsutil import make_dirs, open_new, storage_error
from davit.domain.errors import CorruptChunk

IDX_MAGIC = b"DAVITIDX1\n"
MAX_INDEX_BYTES = 64 << 20  # a 1 GiB pack of 64 KiB chunks indexes in under 1 MiB; larger is planted
_ENTRY = struct.Struct(">32sQIIB")  # id, offset, stored length, plain length, codec

CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_SEALED = 0x80  # flag: the stored bytes are an AES-256-GCM sealed blob (see crypto.py)

# Blobs under this size are handed to the writing thread together, once they add up to it: one
# hand-off (a queue put, a thread wake-up) per compressed small file cost more than its write.
GATHER_BYTES = 1 << 20


_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16


def write_all(fd: int, blobs: list[bytes | memoryview], writev: Callable[[int, Sequence[Any]], int] = os.writev) -> None:
    """Every byte of `blobs`, in order, at `fd`'s offset: one `writev` per hand-off of gathered
    blobs rather than a `write` per blob (a system call, so a GIL hand-off, for each compressed
    small file), looping over partial writes and at most `_IOV_MAX` buffers per call."""
    views = [memoryview(b).cast("B") for b in blobs if len(b)]
    start = 0
    while start < len(views):
        written = writev(fd, views[start : start + _IOV_MAX])
        if written <= 0:  # never for a file with room; refused rather than looped on
            raise OSError(errno.EIO, "writev wrote nothing")
        while written and written >= len(views[start]):
            written -= len(views[start])
            start += 1
        if written:  # a partial write ended inside this buffer
            views[start] = views[start][written:]


@dataclass(frozen=True)
class BlobRef:
    pack: str
    offset: int
    stored_len: int
    plain_len: int
    codec: int


def encode_index(entries: list[tuple[bytes, BlobRef]]) -> bytes:
    body = b"".join(_ENTRY.pack(cid, r.offset, r.stored_len, r.plain_len, r.codec) for cid, r in entries)
    return IDX_MAGIC + body + hashlib.sha256(body).digest()


def decode_index(pack: str, data: bytes, where: str) -> list[tuple[bytes, BlobRef]]:
    if not data.startswith(IDX_MAGIC) or len(data) < len(IDX_MAGIC) + 32:
        raise CorruptChunk("(index)", where, "not a davit pack index")
    body, digest = data[len(IDX_MAGIC) : -32], data[-32:]
    if hashlib.sha256(body).digest() != digest or len(body) % _ENTRY.size:
        raise CorruptChunk("(index)", where, "index checksum mismatch")
    out = []
    for offset in range(0, len(body), _ENTRY.size):
        cid, off, stored, plain, codec = _ENTRY.unpack_from(body, offset)
        out.append((cid, BlobRef(pack, off, stored, plain, codec)))
    return out


class PackWriter:
    """Appends blobs to one local temporary pack file; `seal` puts it into the repository.

    Offsets are assigned at `add`, in the caller's thread; the bytes are written by a
    background thread in the same order, so reading the next chunk overlaps writing this one
    (small blobs gathered up to `GATHER_BYTES` per hand-off; `seal` writes whatever is gathered).
    The spool is in `spool_dir`: the repository's own `tmp/` when it is a local directory (so
    sealing links it, without a copy), else a directory of this host.
    """

    def __init__(self, backend: Backend, spool_dir: Path, pack_id: str, queue_depth: int = 8) -> None:
        self.backend = backend
        self.pack_id = pack_id
        make_dirs(spool_dir)
        self.tmp_path = spool_dir / f"{pack_id}.pack.tmp"
        self._fh = open(open_new(self.tmp_path), "wb", buffering=0)  # noqa: SIM115 - closed by seal/abort
        self.size = 0
        self.entries: list[tuple[bytes, BlobRef]] = []
        self._ids: set[bytes] = set()
        self._queue: queue.Queue[list[bytes | memoryview] | None] = queue.Queue(maxsize=queue_depth)
        self._gathered: list[bytes | memoryview] = []
        self._gathered_size = 0
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._write_loop, name=f"davit-pack-{pack_id[:8]}", daemon=True)
        self._thread.start()

    def __contains__(self, chunk_id: bytes) -> bool:
        return chunk_id in self._ids

    def __len__(self) -> int:
        return len(self.entries)

    def _write_loop(self) -> None:
        while (blobs := self._queue.get()) is not None:
            if self._error is None:
                try:
                    write_all(self._fh.fileno(), blobs)
                except OSError as exc:
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise storage_error(self._error, self.tmp_path) from self._error

    def add(self, chunk_id: bytes, stored: bytes | memoryview, plain_len: int, codec: int) -> None:
        self._raise_error()
        self.entries.append((chunk_id, BlobRef(self.pack_id, self.size, len(stored), plain_len, codec)))
        self._ids.add(chunk_id)
        self.size += len(stored)
        self._gathered.append(stored)
        self._gathered_size += len(stored)
        if self._gathered_size >= GATHER_BYTES:
            self._hand_off()

    def _hand_off(self) -> None:
        if self._gathered:
            self._queue.put(self._gathered)
            self._gathered, self._gathered_size = [], 0

    def _finish_writes(self) -> None:
        if self._thread.is_alive():
            self._hand_off()
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def seal(self) -> list[tuple[bytes, BlobRef]]:
        """The pack, then its index, created in the repository (the backend makes each durable
        before it is visible); the spool is removed."""
        try:
            self._finish_writes()
            self._fh.close()
        except OSError as exc:
            raise storage_error(exc, self.tmp_path) from exc
        try:
            _create(self.backend, pack_key(self.pack_id), self.tmp_path, self.size)
            index = encode_index(self.entries)
            _create(self.backend, index_key(self.pack_id), index, len(index))
        finally:
            self.tmp_path.unlink(missing_ok=True)
        return self.entries

    def abort(self) -> None:
        try:
            self._finish_writes()
        except Exception:
            pass
        if not self._fh.closed:
            self._fh.close()
        self.tmp_path.unlink(missing_ok=True)


def _create(backend: Backend, key: str, src: bytes | Path, size: int) -> None:
    """Create `key`; one already there of the same size is this pack's own, created by an
    earlier attempt whose answer was lost (pack ids are 128 random bits)."""
    if backend.put_if_absent(key, src):
        return
    found = backend.stat(key)
    if found is None or found.size != size:
        raise CorruptChunk("(pack)", f"{backend.where}/{key}", "another object already has this pack's name")


PACK_ID = re.compile(r"[0-9a-f]{32}")


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}.pack"


def index_key(pack_id: str) -> str:
    return f"index/{pack_id}.idx"


def indexed_packs(backend: Backend) -> set[str]:
    """The packs that have an index, as listed now (`index/<pack>.idx`; any other name there is
    not davit's and is passed over: a listing's names are checked before they become keys)."""
    found = set()
    for info in backend.list("index/"):
        name = info.key[len("index/") :]
        if name.endswith(".idx") and PACK_ID.fullmatch(name[:-4]):
            found.add(name[:-4])
    return found


def pack_path(root: Path, pack_id: str) -> Path:
    """Where a local repository at `root` keeps a pack (for tests that damage one)."""
    return root / pack_key(pack_id)


def index_path(root: Path, pack_id: str) -> Path:
    """Where a local repository at `root` keeps a pack's index (for tests)."""
    return root / index_key(pack_id)

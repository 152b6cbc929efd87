"""Pack files and their indexes: many compressed chunks per file, so a backup writes a few
large files instead of one small file per chunk.

A pack is the concatenation of stored blobs. Its index (`index/<pack>.idx`) lists, per blob,
the chunk id (sha256 of the plain bytes), offset, stored length, plain length and codec. A
pack is written under a temporary name, fsynced, renamed, its directory fsynced, and only
then is its index written the same way: an index on disk always names a complete pack.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from davit.adapters.repository.fsutil import fsync_dir, make_dirs, open_new, storage_error, write_atomic
from davit.domain.errors import CorruptChunk

IDX_MAGIC = b"DAVITIDX1\n"
_ENTRY = struct.Struct(">32sQIIB")  # id, offset, stored length, plain length, codec

CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_SEALED = 0x80  # flag: the stored bytes are an AES-256-GCM sealed blob (see crypto.py)


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


def decode_index(pack: str, data: bytes, where: Path) -> list[tuple[bytes, BlobRef]]:
    if not data.startswith(IDX_MAGIC) or len(data) < len(IDX_MAGIC) + 32:
        raise CorruptChunk("(index)", str(where), "not a davit pack index")
    body, digest = data[len(IDX_MAGIC) : -32], data[-32:]
    if hashlib.sha256(body).digest() != digest or len(body) % _ENTRY.size:
        raise CorruptChunk("(index)", str(where), "index checksum mismatch")
    out = []
    for offset in range(0, len(body), _ENTRY.size):
        cid, off, stored, plain, codec = _ENTRY.unpack_from(body, offset)
        out.append((cid, BlobRef(pack, off, stored, plain, codec)))
    return out


class PackWriter:
    """Appends blobs to one temporary pack file; `seal` makes it durable and visible.

    Offsets are assigned at `add`, in the caller's thread; the bytes are written by a
    background thread in the same order, so reading the next chunk overlaps writing this one.
    """

    def __init__(self, root: Path, pack_id: str, queue_depth: int = 8) -> None:
        self.root = root
        self.pack_id = pack_id
        self.tmp_path = root / "tmp" / f"{pack_id}.pack.tmp"
        self._fh = open(open_new(self.tmp_path), "wb", buffering=0)  # noqa: SIM115 - closed by seal/abort
        self.size = 0
        self.entries: list[tuple[bytes, BlobRef]] = []
        self._ids: set[bytes] = set()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=queue_depth)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._write_loop, name=f"davit-pack-{pack_id[:8]}", daemon=True)
        self._thread.start()

    def __contains__(self, chunk_id: bytes) -> bool:
        return chunk_id in self._ids

    def __len__(self) -> int:
        return len(self.entries)

    def _write_loop(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fh.write(data)
                except OSError as exc:
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise storage_error(self._error, self.root) from self._error

    def add(self, chunk_id: bytes, stored: bytes | memoryview, plain_len: int, codec: int) -> None:
        self._raise_error()
        self.entries.append((chunk_id, BlobRef(self.pack_id, self.size, len(stored), plain_len, codec)))
        self._ids.add(chunk_id)
        self.size += len(stored)
        self._queue.put(stored)

    def _finish_writes(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def seal(self) -> list[tuple[bytes, BlobRef]]:
        final = pack_path(self.root, self.pack_id)
        try:
            self._finish_writes()
            os.fsync(self._fh.fileno())
            self._fh.close()
            make_dirs(final.parent)
            os.replace(self.tmp_path, final)
            fsync_dir(final.parent)
        except OSError as exc:
            raise storage_error(exc, self.root) from exc
        write_atomic(index_path(self.root, self.pack_id), encode_index(self.entries), self.root / "tmp")
        return self.entries

    def abort(self) -> None:
        try:
            self._finish_writes()
        except Exception:
            pass
        if not self._fh.closed:
            self._fh.close()
        self.tmp_path.unlink(missing_ok=True)


def pack_path(root: Path, pack_id: str) -> Path:
    return root / "packs" / pack_id[:2] / f"{pack_id}.pack"


def index_path(root: Path, pack_id: str) -> Path:
    return root / "index" / f"{pack_id}.idx"

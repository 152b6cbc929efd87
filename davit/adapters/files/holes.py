"""Chunks of zeros, restored as holes: read and verified once per run, never written.

Disk images and preallocated files hold long runs of zeros. Content-defined chunking cuts a
run into chunks of the largest size, all alike, so a snapshot names the same zero chunk over and
over. `ZeroChunks.read` wraps the repository's `read_chunk`: the first time a chunk id is read
(by each reader thread that meets it before one has finished it) it is read and verified
(sha256 against its id) as any other; if its content is all zeros, the id is remembered with
its length, and this and every later read of it return one shared `bytes(n)` (calloc'd, so it
costs no resident memory) without reading the repository again. The bytes handed out are
exactly the bytes that hash to the id, so "verified before it reaches a target" holds; a
damaged stored copy of the chunk is still found on its first read.

The writer recognises that shared object (`is_zeros`, an identity test) and skips over it with
`lseek` rather than writing it, so the restored file has a hole there and the final size is set
with `ftruncate`. A hole reads back as zeros: the file's content is identical; only its
allocation differs (less disk used, nothing for the checkpoint's flush to write).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from davit.adapters.prefetch import RestoreSource
from davit.adapters.repository.packs import BlobRef

# Zero chunks shorter than this are written as data: a hole of less than a few blocks saves nothing.
MIN_HOLE = 64 << 10
# Lengths of zero chunks remembered at most, a shared buffer each (calloc'd: usually no resident
# pages, at worst one chunk's memory): content-defined chunking gives a zero run one length,
# its largest, plus the tails; a zero chunk of a further length is written as data.
MAX_LENGTHS = 16


class ZeroChunks:
    """A chunk reader that hands out one shared buffer for every verified all-zero chunk."""

    def __init__(self, read: Callable[[bytes], bytes]) -> None:
        self._read = read
        self._ids: dict[bytes, bytes] = {}  # chunk id -> the shared zeros of its length
        self._zeros: dict[int, bytes] = {}  # length -> the shared zeros of that length
        self._lock = threading.Lock()

    def read(self, chunk_id: bytes) -> bytes:
        known = self._ids.get(chunk_id)
        if known is not None:
            return known
        return self.adopt(chunk_id, self._read(chunk_id))

    def adopt(self, chunk_id: bytes, data: bytes) -> bytes:
        """`data`, chunk `chunk_id` just read and verified, or the shared zeros of its length
        if it is all zeros (remembered for the next read of `chunk_id`)."""
        if not _all_zeros(data):
            return data
        with self._lock:
            shared = self._zeros.get(len(data))
            if shared is None:
                if len(self._zeros) >= MAX_LENGTHS:
                    return data
                shared = self._zeros[len(data)] = bytes(len(data))
            self._ids[chunk_id] = shared
        return shared

    def is_zeros(self, data: bytes) -> bool:
        """`data` is a zero chunk this reader handed out (a hole to skip, not bytes to write)."""
        return self._zeros.get(len(data)) is data


def _all_zeros(data: bytes) -> bool:
    # the ends first: a chunk of other content nearly always fails there, for free
    return len(data) >= MIN_HOLE and data[0] == 0 and data[-1] == 0 and data == bytes(len(data))


class SparseSource:
    """A restore's repository (`prefetch.RestoreSource`) whose zero chunks come out shared:
    read one at a time through `ZeroChunks.read`, or by pack span (a remote repository), each
    verified chunk of the span then looked at by `ZeroChunks.adopt`."""

    def __init__(self, repo: RestoreSource) -> None:
        self._repo = repo
        self.zeros = ZeroChunks(repo.read_chunk)

    @property
    def is_remote(self) -> bool:
        return self._repo.is_remote

    def blob_ref(self, chunk_id: bytes) -> BlobRef | None:
        return self._repo.blob_ref(chunk_id)

    def read_chunk(self, chunk_id: bytes) -> bytes:
        return self.zeros.read(chunk_id)

    def read_span(self, pack: str, members: Sequence[tuple[bytes, BlobRef]]) -> Sequence[bytes | Exception]:
        got = self._repo.read_span(pack, members)
        return [
            data if isinstance(data, Exception) else self.zeros.adopt(cid, data)
            for (cid, _ref), data in zip(members, got, strict=True)
        ]

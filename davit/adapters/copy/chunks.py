"""Moving chunks from one repository into packs of another, only those the other lacks.

Between repositories of the same key material (both plain, or both sealed under one data key)
a chunk keeps its id and its stored blob is valid in either: it is copied as stored
(`read_blob`), neither opened nor compressed again. Otherwise each chunk is read and verified
in the source (`read_chunk`), then named, compressed and sealed by the destination (`encode`):
its id changes, and `rename` answers the new one for the tree.

Only the Repository's public methods are used, so the same code copies between any backends.
"""

from __future__ import annotations

from davit.adapters.repository.packs import PackWriter
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import CorruptChunk

_PROBE = b"davit: do these repositories name chunks alike?"

# source id -> destination id remembered per run when ids change, at most this many (a chunk
# seen again, inside a snapshot or in the next one of the same job, is not read again)
_RENAMES_KEPT = 1 << 20


def same_key_material(src: Repository, dst: Repository) -> bool:
    """Whether a chunk stored in `src` is valid as it is in `dst`: both plain, or both encrypted
    with one data key. Two repositories derive the id key and the sealing key from their data key
    together, so equal ids of one probe mean the same data key."""
    return src.encrypted == dst.encrypted and src.chunk_id(_PROBE) == dst.chunk_id(_PROBE)


class ChunkMover:
    """Copies the chunks a tree names into the destination's current pack; `seal` makes it durable.

    Call it under a shared lock on both repositories: `dst.has` then answers for the
    destination as it is, and no prune on either side runs meanwhile."""

    def __init__(self, src: Repository, dst: Repository, same_keys: bool, tuning: Tuning, source_name: str) -> None:
        self.src, self.dst, self.same_keys, self.tuning = src, dst, same_keys, tuning
        self.source_name = source_name
        self.pack: PackWriter | None = None
        self.chunks_sent = 0
        self.bytes_sent = 0
        self._renames: dict[str, str] = {}

    def rename(self, src_hex: str) -> str:
        """The chunk's id in the destination, the chunk stored there first if it lacks it."""
        if self.same_keys:
            cid = bytes.fromhex(src_hex)
            if not self._present(cid):
                self._add_as_stored(cid)
            return src_hex
        known = self._renames.get(src_hex)
        if known is not None and self._present(bytes.fromhex(known)):
            return known
        plain = self.src.read_chunk(bytes.fromhex(src_hex))  # opened and verified against its id
        cid, stored, codec = self.dst.encode(plain)
        if stored is not None and not (self.pack is not None and cid in self.pack):
            self._add(cid, stored, len(plain), codec)
        if len(self._renames) >= _RENAMES_KEPT:
            self._renames.clear()
        self._renames[src_hex] = cid.hex()
        return cid.hex()

    def _present(self, cid: bytes) -> bool:
        """In the destination, or in the pack being written to it."""
        return self.dst.has(cid) or (self.pack is not None and cid in self.pack)

    def _add_as_stored(self, cid: bytes) -> None:
        ref = self.src.blob_ref(cid)
        if ref is None:
            raise CorruptChunk(cid.hex(), f"repository {self.source_name}", "chunk is missing from the repository")
        blob = self.src.read_blob(ref)
        if len(blob) != ref.stored_len:
            raise CorruptChunk(cid.hex(), f"repository {self.source_name}", "pack is truncated")
        self._add(cid, blob, ref.plain_len, ref.codec)

    def _add(self, cid: bytes, stored: bytes | memoryview, plain_len: int, codec: int) -> None:
        if self.pack is None:
            self.pack = self.dst.new_pack()
        self.pack.add(cid, stored, plain_len, codec)
        self.chunks_sent += 1
        self.bytes_sent += len(stored)

    def pack_full(self) -> bool:
        pack = self.pack
        return pack is not None and (pack.size >= self.tuning.pack_size or len(pack) >= self.tuning.pack_max_chunks)

    def seal(self) -> list[str]:
        """Make the chunks added so far durable in the destination; their ids."""
        pack, self.pack = self.pack, None
        if pack is None:
            return []
        if not len(pack):
            pack.abort()
            return []
        return [cid.hex() for cid in self.dst.seal_pack(pack)]

    def abort(self) -> None:
        if self.pack is not None:
            self.pack.abort()
            self.pack = None

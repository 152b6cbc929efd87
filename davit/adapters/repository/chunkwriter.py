"""Storing a stream of chunks for one step of a run: the simple path for adapters whose
source, not the CPU, sets the pace (a database, a remote server).

`put` hashes a chunk, and if the repository lacks it compresses it into the current pack;
`seal` makes the pack durable and returns the ids of the chunks it newly wrote, which is
what the adapter records in its next `CheckpointRecorded` together with its cursor. Order:
put chunks -> seal -> checkpoint event; a kill before the event loses only the unsealed pack.
"""

from __future__ import annotations

import time

from davit.adapters.repository.packs import PackWriter
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning


class ChunkWriter:
    def __init__(self, repo: Repository, tuning: Tuning) -> None:
        self.repo = repo
        self.tuning = tuning
        self._pack: PackWriter | None = None
        self._since = time.monotonic()
        self.bytes_stored = 0

    def put(self, data: bytes | memoryview, *, text: bool = False) -> str:
        """Store one chunk (once: identical content is kept once); its id, in hex. `text`: the
        caller knows it is text (SQL statements), so the repository compresses it unsampled, at
        the tuning's `text_compression_level`."""
        level = self.tuning.text_compression_level if text else None
        cid, stored, codec = self.repo.encode(data, text=text, level=level)
        if stored is not None and not self.repo.has(cid):
            if self._pack is None:
                self._pack = self.repo.new_pack()
            if cid not in self._pack:
                self._pack.add(cid, stored, len(data), codec)
                self.bytes_stored += len(stored)
        return cid.hex()

    def checkpoint_due(self) -> bool:
        pack = self._pack
        if pack is not None and (pack.size >= self.tuning.pack_size or len(pack) >= self.tuning.pack_max_chunks):
            return True
        return time.monotonic() - self._since >= self.tuning.checkpoint_seconds

    def seal(self) -> list[str]:
        """Make every chunk put so far durable; the ids this call newly wrote."""
        pack, self._pack = self._pack, None
        self._since = time.monotonic()
        if pack is None:
            return []
        if not len(pack):
            pack.abort()
            return []
        return [cid.hex() for cid in self.repo.seal_pack(pack)]

    def abort(self) -> None:
        if self._pack is not None:
            self._pack.abort()
            self._pack = None

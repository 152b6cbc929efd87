"""Which chunks a repository holds: its `index/` objects, loaded into memory.

Each pack has an index object (`packs.py`) listing the chunks it holds; the repository answers
"is this chunk stored?" from the union of them. The loaded union is brought up to date by
listing `index/` (on every lock taken, see `Repository.locked`): indexes gone since (a prune,
by anyone) are dropped, new ones are read. Under a lock, so, it is exact. An index never
changes once created, so a remote repository's are read from this host's cache (`cache.py`)
when it has them; which indexes exist always comes from the listing, never from the cache.

An index that does not decode (or is larger than any davit writes) is passed over with a
warning, not loaded: its chunks read as absent, so a backup stores them again, and one damaged
object does not make the whole repository unusable (nor `repository check`, which reports it).
Prune reads every index itself (`read`) and stops at a damaged one, deleting nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge
from davit.adapters.repository.cache import LocalCache
from davit.adapters.repository.packs import MAX_INDEX_BYTES, BlobRef, decode_index, encode_index, index_key, indexed_packs
from davit.domain.errors import CorruptChunk

log = logging.getLogger("davit.repository.index")


class ChunkIndex:
    def __init__(self, backend: Backend, on_gone: Callable[[str], None], cache: LocalCache | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.entries: dict[bytes, BlobRef] = {}
        self._lock = threading.Lock()
        # One refresh at a time, listing and loading together: a refresh that listed before a
        # prune must not apply its listing after one that listed since (it would bring back a
        # pruned pack's entries, read from this host's cache, under a lock that vouches for them).
        self._refreshing = threading.Lock()
        self._loaded: set[str] = set()
        self._damaged: set[str] = set()  # indexes passed over: not read again while listed
        self._on_gone = on_gone  # told of each pack whose index went away

    def packs(self) -> list[str]:
        """The packs that have an index now, listed afresh."""
        return sorted(indexed_packs(self.backend))

    def read(self, pack: str) -> list[tuple[bytes, BlobRef]] | None:
        """What pack `pack`'s index lists; None if it is gone (pruned since it was listed).
        `CorruptChunk` if it does not decode or is too large to be davit's."""
        key = index_key(pack)
        where = f"{self.backend.where}/{key}"
        cached = self.cache.index(pack) if self.cache is not None else None
        if cached is not None:
            try:
                return decode_index(pack, cached, where)
            except CorruptChunk:
                pass  # the cached copy was damaged: fetched again below
        try:
            data = self.backend.get(key, max_bytes=MAX_INDEX_BYTES)
        except ObjectMissing:
            return None
        except ObjectTooLarge as exc:
            raise CorruptChunk("(index)", where, str(exc)) from None
        entries = decode_index(pack, data, where)
        if self.cache is not None:
            self.cache.keep_index(pack, data)
        return entries

    def refresh(self) -> None:
        """Bring the loaded index up to the repository as it is now: drop the packs whose index
        is gone (a prune, by this or another process or `Repository`), load the new ones."""
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
        present = indexed_packs(self.backend)
        with self._lock:
            gone = self._loaded - present
            self._damaged &= present
            still = self._loaded & present
            dropped: set[bytes] = set()
            if gone:
                for cid, ref in list(self.entries.items()):
                    if ref.pack in gone:
                        del self.entries[cid]
                        dropped.add(cid)
                self._loaded -= gone
        for pack in gone:
            self._on_gone(pack)
        if self.cache is not None:
            self.cache.drop_indexes_except(present)
        for pack in sorted(present - still - self._damaged):
            self._load(pack)
        if dropped:
            # A chunk was also in a pack loaded before (two backups stored it at once): its
            # entry there was skipped at load time, and is the one to answer with now.
            for pack in sorted(still):
                self._load(pack, only=dropped)

    def reload(self) -> None:
        """Forget what is loaded and read every index again (after packs were deleted)."""
        with self._refreshing:
            with self._lock:
                self.entries.clear()
                self._loaded.clear()
                self._damaged.clear()
            self._refresh()

    def add(self, pack: str, entries: list[tuple[bytes, BlobRef]]) -> None:
        """A pack this process just sealed (its index is in the repository)."""
        with self._lock:
            for cid, ref in entries:
                self.entries.setdefault(cid, ref)
            self._loaded.add(pack)
        if self.cache is not None:
            self.cache.keep_index(pack, encode_index(entries))  # the very bytes sealed

    def _load(self, pack: str, only: set[bytes] | None = None) -> None:
        try:
            entries = self.read(pack)
        except CorruptChunk as exc:
            log.warning("passing over a damaged index (its chunks are stored again when needed): %s", exc)
            with self._lock:
                self._damaged.add(pack)
            return
        if entries is None:
            return  # pruned since it was listed
        with self._lock:
            for cid, ref in entries:
                if only is None or cid in only:
                    self.entries.setdefault(cid, ref)
            if only is None:
                self._loaded.add(pack)

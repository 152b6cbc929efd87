"""Reading a remote repository's chunks ahead by pack span (`spans_ahead` in
`davit/adapters/prefetch.py`): the chunks of a restore come in the writer's order, each as
verified as one read alone, but nearby chunks of a pack come in one request, and what is read
ahead stays within its bound. A fake repository lays the chunks out in packs and counts requests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from davit.adapters.prefetch import SPAN_GAP, SPAN_MAX, pack_spans, spans_ahead
from davit.adapters.repository.packs import BlobRef
from davit.domain.errors import CorruptChunk

CHUNK = 40_000  # stored and plain bytes of each chunk


@dataclass
class Entry:
    path: str
    chunks: list[str] = field(default_factory=list)


class Packed:
    """Chunks laid out `per_pack` to a pack in the order they are added; counts its requests."""

    def __init__(self, per_pack: int, bad: frozenset[bytes] = frozenset()) -> None:
        self.per_pack, self.bad = per_pack, bad
        self.refs: dict[bytes, BlobRef] = {}
        self.lock = threading.Lock()
        self.requests = 0
        self.chunks_read = 0

    def add(self, cid: bytes) -> None:
        n = len(self.refs)
        self.refs[cid] = BlobRef(f"p{n // self.per_pack:04d}", (n % self.per_pack) * CHUNK, CHUNK, CHUNK, 0)

    def blob_ref(self, chunk_id: bytes) -> BlobRef | None:
        return self.refs.get(chunk_id)

    def read_chunk(self, chunk_id: bytes) -> bytes:
        raise CorruptChunk(chunk_id.hex(), "(fake)", "chunk is missing from the repository")

    def read_span(self, pack: str, members: Sequence[tuple[bytes, BlobRef]]) -> list[bytes | Exception]:
        assert all(ref.pack == pack for _cid, ref in members)
        with self.lock:
            self.requests += 1
            self.chunks_read += len(members)
        return [
            CorruptChunk(cid.hex(), pack, "content does not match its id") if cid in self.bad else b"data of " + cid
            for cid, _ref in members
        ]


def tree(files: int, chunks_each: int, store: Packed) -> list[Entry]:
    todo = [Entry("."), *(Entry(f"f{i}", [f"{i:04x}{j:04x}" for j in range(chunks_each)]) for i in range(files))]
    for entry in todo:
        for chunk in entry.chunks:
            store.add(bytes.fromhex(chunk))
    return todo


def test_a_restore_of_many_small_chunks_in_few_packs_makes_few_requests_and_keeps_the_order() -> None:
    store = Packed(per_pack=200)
    todo = tree(300, 2, store)  # 600 chunks of 40 KB in 3 packs
    got = [(e.path, list(chunks)) for e, chunks in spans_ahead(todo, store, reads=4, max_bytes=64 << 20)]
    assert got == [(e.path, [b"data of " + bytes.fromhex(c) for c in e.chunks]) for e in todo]
    assert store.chunks_read == 600
    assert store.requests <= 600 * CHUNK // SPAN_MAX + 6  # a request per 8 MiB span, not one per chunk


def test_a_corrupt_chunk_stops_the_writer_at_that_chunk_and_not_before() -> None:
    store = Packed(per_pack=100)
    todo = tree(20, 2, store)
    bad = bytes.fromhex(todo[6].chunks[1])
    store.bad = frozenset({bad})
    written: list[str] = []
    with pytest.raises(CorruptChunk, match=bad.hex()):
        for entry, chunks in spans_ahead(todo, store, reads=4, max_bytes=64 << 20):
            for _data in chunks:
                written.append(entry.path)
    assert written == ["f0", "f0", "f1", "f1", "f2", "f2", "f3", "f3", "f4", "f4", "f5"]


def test_a_chunk_missing_from_the_index_fails_where_the_writer_reaches_it() -> None:
    store = Packed(per_pack=100)
    todo = [*tree(3, 1, store), Entry("lost", ["ffffffff"])]
    seen: list[str] = []
    with pytest.raises(CorruptChunk, match="missing"):
        for entry, chunks in spans_ahead(todo, store, reads=2, max_bytes=1 << 20):
            seen.append(entry.path)
            list(chunks)
    assert seen == [".", "f0", "f1", "f2", "lost"]


def test_reading_ahead_stays_within_its_byte_bound_and_stops_with_the_restore() -> None:
    store = Packed(per_pack=1000)
    todo = tree(2000, 1, store)  # 80 MB of chunks
    items = spans_ahead(todo, store, reads=2, max_bytes=1 << 20)
    for _n in range(10):
        _entry, chunks = next(items)
        list(chunks)
    items.close()
    assert store.chunks_read * CHUNK <= 2 * (1 << 20)  # about the bound ahead of 10 chunks, not 80 MB


def test_chunks_an_entry_leaves_untaken_are_dropped_and_a_stale_iterator_yields_nothing() -> None:
    store = Packed(per_pack=50)
    todo = [Entry("big", [f"{j:08x}" for j in range(30)]), *tree(5, 1, store)[1:]]
    for chunk in todo[0].chunks:
        store.add(bytes.fromhex(chunk))
    items = spans_ahead(todo, store, reads=2, max_bytes=64 << 20)
    _big, stale = next(items)
    rest = [(e.path, list(c)) for e, c in items]
    assert [p for p, _ in rest] == ["f0", "f1", "f2", "f3", "f4"]
    assert all(len(c) == 1 for _p, c in rest)
    assert list(stale) == []


def test_spans_join_nearby_chunks_of_a_pack_and_split_at_a_wide_gap_or_the_size_cap() -> None:
    def ref(offset: int, size: int = CHUNK) -> BlobRef:
        return BlobRef("p", offset, size, size, 0)

    near = [(0, b"a", ref(0)), (1, b"b", ref(CHUNK + SPAN_GAP)), (2, b"c", ref(3 * CHUNK + 2 * SPAN_GAP + 1))]
    assert [[m[1] for m in s] for s in pack_spans(near)] == [[b"a", b"b"], [b"c"]]
    big = [(n, bytes([n]), ref(n * (SPAN_MAX // 3), SPAN_MAX // 3)) for n in range(4)]
    assert [len(s) for s in pack_spans(list(reversed(big)))] == [3, 1]  # by offset, at most SPAN_MAX each

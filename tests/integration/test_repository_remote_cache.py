"""A remote repository costs round trips (issue 17, plan §2 notes a and c): what an unchanged
second files backup asks of the storage, counted by `CountingBackend`, and this host's cache
of indexes and trees (`cache.py`), which must never hand out a wrong object."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from davit.adapters.repository.backend import Backend
from davit.adapters.repository.backends.counting import CountingBackend
from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.repository import SPOOL_GRACE_SECONDS, Repository
from tests.dict_backend import DictBackend
from tests.integration.test_files_adapter import backup, make_tree, restore, snapshot_of, without_excluded


class KeyLog(CountingBackend):
    """Counts like `CountingBackend`, and keeps the keys read, to tell trees from manifests."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.read: list[str] = []

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        self.read.append(key)
        return super().get(key, max_bytes)

    def get_to(self, key: str, dst: Path) -> None:
        self.read.append(key)
        super().get_to(key, dst)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.read.append(key)
        return super().get_range(key, offset, length)


def test_an_unchanged_second_backup_by_a_new_davitd_reads_no_tree_no_index_and_no_pack(tmp_path: Path) -> None:
    """The first backup fills this host's cache; davitd restarts (a new Repository object on the
    same home) and backs up the same tree. It takes the lock once (for store and publish) and
    lists `index/` then only (never a request per pack), reads the parent tree (its files cache)
    and every index from the cache, and reads no pack."""
    storage = KeyLog(MemoryBackend())
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    backup(Repository.open(storage, local_dir=tmp_path / "home"), source, "b1")

    storage.counts.reset()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    assert storage.counts["get", "index/"] == 0  # the indexes came from the cache
    storage.counts.reset()
    storage.read.clear()
    ctx = backup(repo, source, "b2")
    assert ctx.chunks_written == []
    counts = storage.counts
    assert [k for k in storage.read if not k.endswith("manifest.json") and not k.startswith("locks/")] == []
    assert counts.total("stat", "packs/") == 0 and counts.total(None, "packs/") == 0
    assert counts["list", "locks/"] == 1  # one acquisition, held from store through publish
    assert counts["list", "index/"] == 1  # when it was taken; the publish's check answered from it
    assert counts["list", "snapshots/"] == 1  # the parent, looked up once
    assert counts["list", "staging/"] == 0  # its segments deleted by the keys it uploaded: no listing

    restore(repo, tmp_path / "out", snapshot="b2")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(source))


def test_an_unchanged_second_backup_lists_each_area_at_most_once_from_opening_on(tmp_path: Path) -> None:
    """The issue's goal, counted from the opening of a fresh Repository object (a davitd started
    for this run) to the end of the run: `index/` and `snapshots/` are listed at most once, and
    `locks/` once per lock taken (one)."""
    storage = CountingBackend(DictBackend())
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    backup(Repository.open(storage, local_dir=tmp_path / "home"), source, "b1")

    storage.counts.reset()
    ctx = backup(Repository.open(storage, local_dir=tmp_path / "home"), source, "b2")
    assert ctx.chunks_written == []
    assert storage.counts["list", "index/"] == 1
    assert storage.counts["list", "snapshots/"] == 1
    assert storage.counts["list", "locks/"] == 1
    assert storage.counts.total("list", "packs/") == 0
    assert [s.id for s in Repository.open(storage, local_dir=tmp_path / "home").snapshots("job")] == ["b1", "b2"]


def test_missing_chunks_lists_again_unless_the_lock_is_still_the_one_whose_taking_listed(tmp_path: Path) -> None:
    """Under the hold whose taking listed `index/`, `missing_chunks` answers from memory; outside
    a lock, under a lock taken again (a prune may have run in between) or under a lost one it
    lists afresh, and a pack pruned in between reads as missing."""
    storage = CountingBackend(DictBackend())
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"only in b1 " * 100)
    home = tmp_path / "home"
    repo = Repository.open(storage, local_dir=home)
    backup(repo, source, "b1")
    chunk = next(iter(repo.index.entries))

    def listings() -> int:
        return storage.counts["list", "index/"]

    before = listings()
    with repo.locked(exclusive=False):
        assert listings() == before + 1  # taking it lists
        assert repo.missing_chunks([chunk]) == set()
        with repo.locked(exclusive=False):  # re-entrant: the same hold
            assert repo.missing_chunks([chunk]) == set()
        assert listings() == before + 1
    assert repo.missing_chunks([chunk]) == set()  # no lock held: a listing
    assert listings() == before + 2

    # Between two holds another Repository object prunes the pack (index first, then pack).
    pruner = Repository.open(storage, local_dir=tmp_path / "pruner")
    with pruner.locked(exclusive=True):
        pruner.delete_pack(repo.index.entries[chunk].pack)
    with repo.locked(exclusive=False):
        assert repo.missing_chunks([chunk]) == {chunk}  # the new hold's listing saw the prune

    repo2 = Repository.open(storage, local_dir=tmp_path / "other")
    (source / "a").write_bytes(b"now in b2 " * 100)
    backup(repo2, source, "b2")
    chunk2 = next(iter(repo2.index.entries))
    with repo2.locked(exclusive=False) as lock:
        lock.lost_reason = "the refresh came too late"  # as `HeldLock` finds it when its refresh stalls
        counted = listings()
        assert repo2.missing_chunks([chunk2]) == set()
        assert listings() == counted + 1  # a lost lock vouches for nothing: listed again
        lock.lost_reason = None  # released as a held lock, not as a lost one


def test_a_cached_tree_or_index_edited_on_this_host_is_fetched_again_not_believed(tmp_path: Path) -> None:
    """Someone who can write davitd's home edits the cache: a tree whose bytes no longer hash to
    its manifest's sha256, and an index whose checksum no longer holds. Both are fetched again
    from the repository; the restore is byte-identical."""
    storage = KeyLog(MemoryBackend())
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    home = tmp_path / "home"
    backup(Repository.open(storage, local_dir=home), source, "b1")
    trees = list(home.glob("cache/*/trees/*"))
    indexes = list(home.glob("cache/*/index/*.idx"))
    assert trees and indexes
    for path in [*trees, *indexes]:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    storage.read.clear()
    repo = Repository.open(storage, local_dir=home)
    restore(repo, tmp_path / "out", snapshot="b1")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(source))
    assert {k for k in storage.read if k.startswith("index/")} == {f"index/{p.name}" for p in indexes}
    assert "snapshots/b1/tree.jsonl.zst" in storage.read


def test_the_tree_cache_keeps_to_its_budget_dropping_the_least_recently_used(tmp_path: Path) -> None:
    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    for i in range(4):
        src = tmp_path / f"src{i}"
        src.mkdir()
        for j in range(30):
            (src / f"{i}-{j}-{os.urandom(8).hex()}").write_bytes(b"x")
        if i < 3:
            backup(repo, src, f"b{i}", name=f"job{i}")
    assert repo.cache is not None
    sizes = {p.name: p.stat().st_size for p in repo.cache.directory.glob("trees/*")}
    assert len(sizes) == 3
    repo.cache.tree_budget = sum(sizes.values()) - 1
    oldest = repo.cache.directory / "trees" / sorted(sizes, key=lambda n: (repo.cache.directory / "trees" / n).stat().st_mtime)[0]
    os.utime(oldest, (time.time() - 100, time.time() - 100))
    other = Repository.open(storage, local_dir=tmp_path / "elsewhere")
    backup(other, tmp_path / "src3", "b3", name="job3")  # a new tree, fetched into *its* cache
    repo.open_tree(repo.resolve("b3")).close()  # kept by `repo`'s cache: over budget
    assert not oldest.exists()
    assert sum(p.stat().st_size for p in repo.cache.directory.glob("trees/*")) <= repo.cache.tree_budget


def test_spool_left_overs_of_a_killed_davitd_are_removed_at_open_and_young_ones_are_left(tmp_path: Path) -> None:
    """Two Repository objects of one process may share a home: only old spool files go."""
    storage = MemoryBackend()
    home = tmp_path / "home"
    Repository.open(storage, local_dir=home)
    old, young = home / "tmp" / "dead.pack.tmp", home / "tmp" / "busy.pack.tmp"
    old.write_bytes(b"half a pack")
    young.write_bytes(b"being written")
    past = time.time() - SPOOL_GRACE_SECONDS - 60
    os.utime(old, (past, past))
    Repository.open(storage, local_dir=home)
    assert not old.exists() and young.exists()


def test_a_new_repository_has_a_uuid_and_its_cache_is_keyed_by_it(tmp_path: Path) -> None:
    import json

    storage = MemoryBackend()
    repo: Any = Repository.open(storage, local_dir=tmp_path / "home")
    uuid = json.loads(storage.get("config.json"))["uuid"]
    assert len(uuid) == 32 and int(uuid, 16) >= 0
    other = Repository.open(MemoryBackend(), local_dir=tmp_path / "home")
    assert repo.cache.directory != other.cache.directory

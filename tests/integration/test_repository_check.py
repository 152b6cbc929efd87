"""`repository check` and `repository stats` on real repositories on disk, damaged the way a
disk, an operator or a half-finished prune damages them. The damage is done through the
storage port (`repo.backend`), as it would be on any backend."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from davit.adapters.repository.check import Subset, check_repository, index_key, pack_key
from davit.adapters.repository.chunking import Chunking
from davit.adapters.repository.packs import MAX_INDEX_BYTES, BlobRef, decode_index, encode_index
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import prune
from davit.adapters.repository.stats import repository_stats
from davit.domain.errors import CorruptChunk
from tests.integration.crafted_trees import ROOT, publish
from tests.integration.test_files_adapter import backup

PASSPHRASE = "check reads sealed chunks too"


def write_sources(tmp_path: Path) -> dict[str, Path]:
    """Two jobs' sources: regular files only, one shared between them, so the figures can be
    worked out from the bytes written."""
    shared = os.urandom(200_000)
    sources = {"web": tmp_path / "web", "db": tmp_path / "db"}
    for root in sources.values():
        root.mkdir()
        (root / "shared.bin").write_bytes(shared)
    (sources["web"] / "index.html").write_text("<p>hello</p>\n" * 3000)
    (sources["web"] / "big.bin").write_bytes(os.urandom(600_000))
    (sources["db"] / "dump.sql").write_text("INSERT INTO t VALUES (1);\n" * 9000)
    (sources["db"] / "empty").write_bytes(b"")
    return sources


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    return write_sources(tmp_path)


@pytest.fixture(params=[None, PASSPHRASE], ids=["plain", "encrypted"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, sources: dict[str, Path]) -> Repository:
    repo = Repository.open(tmp_path / "repo", passphrase=request.param)
    backup(repo, sources["web"], "run-web-1", name="web")
    backup(repo, sources["db"], "run-db-1", name="db")
    backup(repo, sources["web"], "run-web-2", name="web")  # unchanged: a snapshot of no new chunks
    return repo


def packs_of(repo: Repository) -> list[str]:
    return sorted(info.key.removeprefix("index/").removesuffix(".idx") for info in repo.backend.list("index/"))


def entries_of(repo: Repository, pack: str) -> list[tuple[bytes, BlobRef]]:
    return list(decode_index(pack, repo.backend.get(index_key(pack)), Path(pack)))


def test_a_sound_repository_checks_clean_with_and_without_reading_the_data(repo: Repository) -> None:
    report = check_repository(repo)
    assert report.ok, report.problems
    assert report.snapshots == 3 and report.packs == len(packs_of(repo)) >= 3 and report.unindexed_packs == 0
    assert report.chunks_read == 0
    report = check_repository(repo, read_data=True)
    assert report.ok, report.problems
    assert report.packs_read == report.packs
    assert report.chunks_read == sum(len(entries_of(repo, p)) for p in packs_of(repo))


def test_a_missing_pack_is_found_with_the_snapshots_it_breaks(repo: Repository) -> None:
    pack = packs_of(repo)[0]
    repo.backend.delete(pack_key(pack))
    report = check_repository(repo)
    assert not report.ok
    assert any(f"names pack {pack}, which is missing" in p for p in report.problems), report.problems
    assert any(p.startswith("snapshot ") and "chunks it needs are not in any intact pack" in p for p in report.problems)


def test_an_index_whose_pack_never_existed_is_found_and_breaks_no_snapshot(repo: Repository) -> None:
    real = packs_of(repo)[0]
    dangling = "ab" + os.urandom(15).hex()
    repo.backend.put(index_key(dangling), encode_index(entries_of(repo, real)))
    report = check_repository(repo)
    assert report.problems == [
        f"{index_key(dangling)} names pack {dangling}, which is missing ({len(entries_of(repo, real))} chunks lost)"
    ]


def test_a_truncated_pack_and_an_unreadable_index_are_found(repo: Repository) -> None:
    first, second = packs_of(repo)[:2]
    data = repo.backend.get(pack_key(first))
    repo.backend.put(pack_key(first), data[: len(data) // 2])
    repo.backend.put(index_key(second), repo.backend.get(index_key(second))[:-1])
    report = check_repository(repo)
    assert any(p.startswith(f"pack {first} is {len(data) // 2} bytes") for p in report.problems), report.problems
    assert any(p.startswith(f"{index_key(second)}: ") and "checksum" in p for p in report.problems), report.problems


def test_a_flipped_byte_in_a_pack_is_found_only_by_reading_the_data(repo: Repository) -> None:
    pack = packs_of(repo)[0]
    _cid, ref = entries_of(repo, pack)[0]
    data = bytearray(repo.backend.get(pack_key(pack)))
    where = ref.offset + ref.stored_len // 2
    data[where] ^= 0x01
    repo.backend.put(pack_key(pack), bytes(data))
    assert check_repository(repo).ok  # the structure is intact: same size, same names
    report = check_repository(repo, read_data=True)
    assert len(report.problems) == 1 and report.problems[0].startswith(f"pack {pack}: 1 chunks do not verify"), report.problems
    assert report.chunks_read == sum(len(entries_of(repo, p)) for p in packs_of(repo)) - 1


def test_a_snapshot_whose_chunk_no_index_names_is_found(repo: Repository) -> None:
    pack = packs_of(repo)[0]
    entries = entries_of(repo, pack)
    lost, _ = entries[0]
    repo.backend.put(index_key(pack), encode_index(entries[1:]))
    report = check_repository(repo)
    assert report.problems and all(p.startswith("snapshot ") for p in report.problems), report.problems
    assert all(f"chunk {lost.hex()}" in p for p in report.problems)


def test_a_damaged_manifest_is_reported(repo: Repository) -> None:
    victim = repo.snapshots()[0].id
    repo.backend.put(f"snapshots/{victim}/manifest.json", b'{"id": "x", "job": ')
    report = check_repository(repo)
    assert report.damaged_snapshots == 1 and report.snapshots == 2
    assert [p for p in report.problems if p.startswith(f"snapshot {victim} is damaged: ")], report.problems


def test_subsets_read_every_pack_exactly_once_and_the_same_ones_each_time(repo: Repository) -> None:
    packs = packs_of(repo)
    parts = [Subset(n, 3) for n in (1, 2, 3)]
    read = [check_repository(repo, subset=part).packs_read for part in parts]
    assert sum(read) == len(packs)
    assert [sum(part.selects(p) for p in packs) for part in parts] == read
    assert check_repository(repo, subset=parts[0]).packs_read == read[0]


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "1", "1/3/4", ""])
def test_a_subset_is_n_of_m(text: str) -> None:
    with pytest.raises(ValueError, match="is not a subset"):
        Subset.parse(text)


def distinct_chunks(sources: dict[str, Path], chunking: Chunking) -> dict[bytes, int]:
    """The plain chunks the files backup cuts the sources into (as the repository says), by hash."""
    found: dict[bytes, int] = {}
    for root in sources.values():
        for path in root.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    for piece in chunking.chunker().cut(fh):
                        found[hashlib.sha256(piece).digest()] = len(piece)
    return found


def test_stats_equal_what_was_stored(tmp_path: Path, sources: dict[str, Path]) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(repo, sources["web"], "run-web-1", name="web")
    backup(repo, sources["db"], "run-db-1", name="db")
    backup(repo, sources["web"], "run-web-2", name="web")
    stats = repository_stats(repo)

    size = {job: sum(p.stat().st_size for p in root.rglob("*")) for job, root in sources.items()}
    assert repo.chunking is not None  # a new repository records FastCDC
    chunks = distinct_chunks(sources, repo.chunking)
    on_disk = [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert stats.snapshots == 3 and stats.damaged_snapshots == 0
    assert stats.jobs == {
        "web": {"snapshots": 2, "logical_bytes": 2 * size["web"]},
        "db": {"snapshots": 1, "logical_bytes": size["db"]},
    }
    assert stats.logical_bytes == 2 * size["web"] + size["db"]
    assert stats.chunks == len(chunks) and stats.plain_bytes == sum(chunks.values())
    assert stats.packs == len([p for p in on_disk if p.suffix == ".pack"])
    assert stats.pack_bytes == sum(p.stat().st_size for p in on_disk if p.suffix == ".pack")
    assert stats.stored_bytes == sum(p.stat().st_size for p in on_disk)
    assert stats.dedup_ratio == stats.logical_bytes / stats.plain_bytes > 1  # the shared file and the second run
    assert stats.to_json()["jobs"]["db"]["snapshots"] == 1
    json.dumps(stats.to_json())  # what --json prints


def test_a_damaged_index_is_reported_by_a_fresh_check_and_does_not_stop_backups(
    repo: Repository, sources: dict[str, Path]
) -> None:
    """An index that does not decode (garbage planted under a pack's index name) made every
    later open of the repository raise: no backup could run, and `davit repository check`, which
    opens the repository as every command does, raised instead of reporting it. Now the index is
    passed over (its chunks are stored again when needed), check names it, and a prune, which
    must know every pack's content, still refuses to delete anything."""
    damaged = "cd" + os.urandom(15).hex()
    repo.backend.put(index_key(damaged), b"DAVITIDX1\n" + b"\x00" * 100)
    packs_before = sorted(o.key for o in repo.backend.list("packs/"))
    fresh = Repository.open(repo.root, passphrase=PASSPHRASE if repo.encrypted else None, create=False)
    report = check_repository(fresh)
    assert [p for p in report.problems if p.startswith(index_key(damaged))] == [
        f"{index_key(damaged)}: chunk (index) in {index_key(damaged)} is corrupt: index checksum mismatch"
    ]
    backup(fresh, sources["db"], "run-db-2", name="db")
    assert "run-db-2" in [s.id for s in fresh.snapshots()]
    with pytest.raises(CorruptChunk, match=damaged):
        prune(fresh, grace_seconds=0)
    assert set(packs_before) <= {o.key for o in repo.backend.list("packs/")}


def test_an_index_larger_than_any_davit_writes_is_not_read_into_memory(repo: Repository) -> None:
    """A sparse 65 MiB file planted as an index: passed over at open (before, read whole on
    every lock taken), reported by check as too large."""
    huge = "ef" + os.urandom(15).hex()
    repo.backend.put(index_key(huge), b"DAVITIDX1\n")
    os.truncate(repo.root / index_key(huge), MAX_INDEX_BYTES + 1)
    fresh = Repository.open(repo.root, passphrase=PASSPHRASE if repo.encrypted else None, create=False)
    assert fresh.index.read(packs_of(repo)[0]) is not None
    with pytest.raises(CorruptChunk, match="more than the"):
        fresh.index.read(huge)
    report = check_repository(fresh)
    assert any(p.startswith(index_key(huge)) and "more than the" in p for p in report.problems), report.problems


def test_a_tree_line_nested_deeper_than_python_parses_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """`davit repository check` on a repository where someone published a tree holding a line of
    100 000 `[` (a valid manifest and checksum): RecursionError escaped check; now it is reported."""
    repo = Repository.open(tmp_path / "repo")
    publish(repo, "h1", [ROOT, b"[" * 100_000])
    report = check_repository(repo)
    assert [p for p in report.problems if p.startswith("snapshot h1")] == [
        "snapshot h1: its tree holds a malformed line: maximum recursion depth exceeded while decoding a JSON array "
        "from a unicode string"
    ]

"""Snapshot trees are written and read as streams: a backup of millions of files does not hold
its tree in memory, and a damaged or cut-short tree is refused before a line of it is used."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.trees import SEGMENT
from davit.domain.errors import CorruptChunk

PASSPHRASE = "streaming trees"


def tree_lines(count: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "p": f"dir{i // 1000}/file{i}.txt",
                "t": "f",
                "m": 420,
                "mt": i,
                "s": i,
                "c": [hashlib.sha256(str(i).encode()).hexdigest()],
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


def manifest(snapshot_id: str) -> dict[str, object]:
    return {"id": snapshot_id, "job": "job", "kind": "files", "run_id": snapshot_id, "created_at": "2026-01-01T00:00:00"}


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_a_large_tree_is_published_and_read_back_without_holding_it_in_memory(tmp_path: Path, passphrase: str | None) -> None:
    repo = Repository.open(tmp_path / "repo", passphrase=passphrase)
    plain = tmp_path / "tree.jsonl"
    plain.write_bytes(tree_lines(200_000))  # about 30 MB of JSON lines, several sealed segments
    size = plain.stat().st_size
    tracemalloc.start()
    with open(plain, "rb") as fh:
        info = repo.publish_snapshot_from(manifest("s1"), fh)
    _, publish_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    digest, lines = hashlib.sha256(), 0
    with repo.open_tree(info) as stream:
        for line in stream:
            digest.update(line)
            lines += 1
    _, read_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert lines == 200_000 and digest.hexdigest() == hashlib.sha256(plain.read_bytes()).hexdigest()
    assert (tmp_path / "repo" / "snapshots" / "s1" / "tree.jsonl.zst").stat().st_size > SEGMENT or passphrase is None
    assert publish_peak < size / 4 and read_peak < size / 4, (publish_peak, read_peak, size)


def test_a_small_tree_given_whole_reads_back_the_same_way(tmp_path: Path) -> None:
    import zstandard

    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE)
    data = tree_lines(0)
    writer = repo.new_pack()  # the chunks the tree names exist: a publish checks them
    for i in range(10):
        cid, stored, codec = repo.encode(str(i).encode())
        assert stored is not None
        writer.add(cid, stored, len(str(i)), codec)
        data += json.dumps({"p": f"file{i}.txt", "t": "f", "m": 420, "mt": i, "s": 1, "c": [cid.hex()]}).encode() + b"\n"
    repo.seal_pack(writer)
    info = repo.publish_snapshot(manifest("s1"), zstandard.ZstdCompressor().compress(data))
    assert repo.open_tree(info).read() == data
    assert zstandard.ZstdDecompressor().decompress(repo.tree_bytes(info), max_output_size=1 << 20) == data


def rewrite_tree(repo: Repository, snapshot_id: str, stored: bytes) -> None:
    """A stored tree replaced and its manifest made to match. Without the passphrase the
    manifest's MAC then fails (tests/integration/test_repository_manifests.py); it is re-made
    here with the key so that the next defence, the sealed segments, is what is tested."""
    snap = repo.root / "snapshots" / snapshot_id
    (snap / "tree.jsonl.zst").write_bytes(stored)
    m = json.loads((snap / "manifest.json").read_text())
    m["tree_sha256"] = hashlib.sha256(stored).hexdigest()
    key = repo._key
    assert key is not None
    m["mac"] = key.manifest_mac(snapshot_id, m)
    (snap / "manifest.json").write_text(json.dumps(m))


def test_a_sealed_tree_cut_at_a_segment_boundary_or_reordered_is_refused(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", passphrase=PASSPHRASE)
    with io.BytesIO(os.urandom(3 * SEGMENT)) as noise:  # incompressible: three full segments and a last
        info = repo.publish_snapshot_from(manifest("s1"), noise)
    stored = (repo.root / "snapshots" / info.id / "tree.jsonl.zst").read_bytes()
    magic_len = stored.index(b"\n") + 1
    first_len = int.from_bytes(stored[magic_len : magic_len + 4], "big")
    first_end = magic_len + 4 + first_len

    rewrite_tree(repo, "s1", stored[:first_end])  # only the first segment: the end is missing
    with pytest.raises(CorruptChunk, match="cut short"):
        repo.open_tree(repo.resolve("s1")).read()

    second_len = int.from_bytes(stored[first_end : first_end + 4], "big")
    second_end = first_end + 4 + second_len
    swapped = stored[:magic_len] + stored[first_end:second_end] + stored[magic_len:first_end] + stored[second_end:]
    rewrite_tree(repo, "s1", swapped)
    with pytest.raises(CorruptChunk, match="does not open at segment 0"):
        repo.open_tree(repo.resolve("s1")).read()


def test_a_tree_that_differs_from_its_manifest_is_refused_before_any_line_is_read(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    plain = io.BytesIO(tree_lines(1000))
    info = repo.publish_snapshot_from(manifest("s1"), plain)
    path = repo.root / "snapshots" / info.id / "tree.jsonl.zst"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match="does not match its manifest"):
        repo.open_tree(info)

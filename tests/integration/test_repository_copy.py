"""repository.copy between two repositories on disk, driven without a daemon: what an operator
keeping a second copy (3-2-1) relies on."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from davit.adapters.copy.lines import CopyNotPossible
from davit.adapters.copy.work import RepositoryCopyWork
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.packs import decode_index
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import prune
from davit.adapters.repository.treeformat import read_lines
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from davit.domain.jobs import RepositoryCopyJob
from tests.fakes import MemoryRunContext
from tests.integration.crafted_trees import ROOT, publish
from tests.integration.test_files_adapter import SMALL, backup, make_tree, restore, snapshot_of, without_excluded

PASS_A, PASS_B = "correct horse battery staple", "a different passphrase entirely"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    make_tree(root)
    return root


def copy(
    src: Repository,
    dst: Repository,
    run_id: str = "copy1",
    ctx: MemoryRunContext | None = None,
    tuning: Tuning = SMALL,
    **fields: object,
) -> tuple[RepositoryCopyWork, MemoryRunContext]:
    spec = RepositoryCopyJob.model_validate(
        {"name": "offsite", "kind": "repository.copy", "source_repository": "main", "repository": "offsite", **fields}
    )
    repos = {"main": src}
    work = RepositoryCopyWork(RunInputs(spec, run_id, tuning, repo=dst, open_named=repos.__getitem__))
    ctx = ctx or MemoryRunContext(run_id=run_id)
    if not ctx.cursors and not ctx.done:
        work.details = work.prepare(ctx)
    else:  # resumed: prepared on the first attempt, its details recorded
        work.details = ctx.details  # type: ignore[attr-defined]
    ctx.details = work.details  # type: ignore[attr-defined]
    work.run(ctx)
    work.finish(ctx)
    return work, ctx


def stored_chunks(repo: Repository) -> list[bytes]:
    """Every chunk id in every pack index of `repo` (a chunk stored twice appears twice)."""
    found: list[bytes] = []
    for obj in repo.backend.list("index/"):
        pack = obj.key.rsplit("/", 1)[1].removesuffix(".idx")
        found += [cid for cid, _ref in decode_index(pack, repo.backend.get(obj.key), Path(obj.key))]
    return found


def packs(repo: Repository) -> int:
    return sum(1 for _ in repo.backend.list("index/"))


def verify_all(repo: Repository) -> int:
    """Read (and so verify) every chunk of every snapshot; how many were read."""
    read = 0
    for snap in repo.snapshots():
        for line in repo.open_tree(snap):
            for chunk in json.loads(line).get("c") or ():
                repo.read_chunk(bytes.fromhex(chunk))
                read += 1
    return read


def test_a_copied_files_snapshot_restores_byte_identical_and_keeps_its_id(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    backup(src, tree, "b1")
    copy(src, dst)
    (copied,) = dst.snapshots()
    original = src.resolve("b1")
    assert (copied.id, copied.job, copied.kind, copied.created_at, copied.stats) == (
        original.id,
        original.job,
        original.kind,
        original.created_at,
        original.stats,
    )
    restore(dst, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))
    assert sorted(stored_chunks(dst)) == sorted(set(stored_chunks(src)))  # exactly the chunks, once each


def test_copying_again_sends_nothing(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    backup(src, tree, "b1")
    copy(src, dst, "copy1")
    before = packs(dst)
    work, ctx = copy(src, dst, "copy2")
    assert work.plan() == [] and ctx.checkpoints == []
    assert packs(dst) == before


def test_a_new_snapshot_sends_only_the_chunks_the_copy_lacks(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    backup(src, tree, "b1")
    copy(src, dst, "copy1")
    (tree / "new.txt").write_text("only in the second backup\n" * 100)
    backup(src, tree, "b2")
    _work, ctx = copy(src, dst, "copy2")
    assert len(ctx.chunks_written) == 1  # the new file's one chunk
    restore(dst, tmp_path / "out", snapshot="b2")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))


@pytest.mark.parametrize(("src_pass", "dst_pass"), [(PASS_A, PASS_B), (None, PASS_B), (PASS_A, None)])
def test_a_copy_between_different_keys_is_sealed_again_and_restores_byte_identical(
    tree: Path, tmp_path: Path, src_pass: str | None, dst_pass: str | None
) -> None:
    src = Repository.open(tmp_path / "main", passphrase=src_pass)
    dst = Repository.open(tmp_path / "offsite", passphrase=dst_pass)
    backup(src, tree, "b1")
    copy(src, dst)
    restore(dst, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))
    # the ids are the destination's own: none of the source's names a chunk there
    assert not set(stored_chunks(dst)) & set(stored_chunks(src))
    copied = [c for e in read_lines(dst.open_tree(dst.resolve("b1"))) for c in e.chunks]
    assert copied and all(dst.has(bytes.fromhex(c)) for c in copied)
    reopened = Repository.open(tmp_path / "offsite", passphrase=dst_pass)  # the manifest authenticates under DST's key
    assert reopened.resolve("b1").authenticated is (True if dst_pass else None)


def test_a_copy_between_repositories_of_one_key_copies_blobs_as_stored(tree: Path, tmp_path: Path) -> None:
    src = Repository.open(tmp_path / "main", passphrase=PASS_A)
    backup(src, tree, "b1")
    # a repository sharing the key: its config is the source's (as after copying config.json)
    (tmp_path / "offsite").mkdir()
    (tmp_path / "offsite" / "config.json").write_bytes((tmp_path / "main" / "config.json").read_bytes())
    dst = Repository.open(tmp_path / "offsite", passphrase=PASS_A)
    copy(src, dst)
    assert sorted(stored_chunks(dst)) == sorted(set(stored_chunks(src)))
    restore(dst, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))


def test_only_the_jobs_named_are_copied(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    backup(src, tree, "a1", name="etc")
    backup(src, tree, "b1", name="home")
    backup(src, tree, "a2", name="etc")
    copy(src, dst, jobs=["etc"])
    assert [s.id for s in dst.snapshots()] == ["a1", "a2"]
    copy(src, dst, "copy2", snapshot="b1")
    assert {s.id for s in dst.snapshots()} == {"a1", "a2", "b1"}


def test_the_destination_retention_is_applied_and_what_it_would_forget_is_not_copied(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    for run in ("b1", "b2", "b3"):
        backup(src, tree, run)
    work, _ctx = copy(src, dst, retention={"keep_last": 1})
    assert work.plan() == ["copy:b3", "retention"]
    assert [s.id for s in dst.snapshots()] == ["b3"]
    assert len(src.snapshots()) == 3  # the source keeps to its own policy


def test_a_stopped_copy_resumes_without_sending_a_sealed_pack_again(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    backup(src, tree, "b1")
    ctx = MemoryRunContext(run_id="copy1", stop_after_checkpoints=1)
    with pytest.raises(RunStopped):
        copy(src, dst, ctx=ctx)
    assert ctx.chunks_written and not dst.snapshots()
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    copy(src, dst, ctx=ctx)
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written))  # no chunk sent twice
    assert sorted(stored_chunks(dst)) == sorted(set(stored_chunks(src)))
    restore(dst, tmp_path / "out")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))


def test_a_prune_of_the_destination_between_a_stop_and_the_resume_keeps_the_staged_chunks(tree: Path, tmp_path: Path) -> None:
    src = Repository.open(tmp_path / "main")
    dst = Repository.open(tmp_path / "offsite", passphrase=PASS_B)
    backup(src, tree, "b1")
    ctx = MemoryRunContext(run_id="copy1", stop_after_checkpoints=1)
    with pytest.raises(RunStopped):
        copy(src, dst, ctx=ctx)
    sent = len(stored_chunks(dst))
    assert sent
    prune(Repository.open(tmp_path / "offsite", passphrase=PASS_B), grace_seconds=0)
    assert len(stored_chunks(dst)) == sent  # the copy's staging on DST protects what it sent
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    copy(src, dst, ctx=ctx)
    assert verify_all(dst) > 0


def test_a_concurrent_prune_of_the_destination_leaves_every_copied_snapshot_verifying(tree: Path, tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite", passphrase=PASS_B)
    for run in ("b1", "b2", "b3", "b4"):
        (tree / f"{run}.bin").write_bytes(run.encode() * 200_000)
        backup(src, tree, run)
    done, started = threading.Event(), threading.Event()
    prunes: list[dict[str, int]] = []

    def pruner() -> None:
        other = Repository.open(tmp_path / "offsite", passphrase=PASS_B)  # another process's view
        while not done.is_set():
            # (a grace of 0 would also delete the temporary file of a lock being taken: by design
            # the clean-up of `tmp/` only removes what is older than any writer's work)
            prunes.append(prune(other, grace_seconds=60))
            started.set()
            time.sleep(0.005)  # room for the copy to take its shared locks

    thread = threading.Thread(target=pruner)
    thread.start()
    try:
        assert started.wait(30)
        copy(src, dst)
    finally:
        done.set()
        thread.join()
    assert len(prunes) >= 2
    assert [s.id for s in dst.snapshots()] == ["b1", "b2", "b3", "b4"]
    fresh = Repository.open(tmp_path / "offsite", passphrase=PASS_B)
    assert verify_all(fresh) > 0
    restore(fresh, tmp_path / "out", snapshot="b4")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(tree))


def publish_lines(repo: Repository, snapshot: str, kind: str, lines: Callable[[ChunkWriter], list[dict[str, object]]]) -> None:
    writer = ChunkWriter(repo, SMALL)
    with repo.locked(exclusive=False):
        entries = lines(writer)
        writer.seal()
    tree = zstandard.ZstdCompressor().compress(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
    manifest = {"id": snapshot, "job": "db", "kind": kind, "created_at": "2024-05-01T03:00:00+00:00", "run_id": snapshot}
    repo.publish_snapshot(manifest, tree)


def weaviate_like(writer: ChunkWriter) -> list[dict[str, object]]:
    return [
        {"p": "Articles", "t": "d", "w": "collection", "config": {"class": "Articles"}, "tenants": None},
        {"p": "Articles/-/00000001", "t": "f", "c": [writer.put(b"objects one" * 100)], "w": "objects", "last": "uuid-1"},
        {"p": "Articles/-/00000002", "t": "f", "c": [writer.put(b"objects two" * 100)], "w": "objects", "last": "uuid-2"},
    ]


def test_a_weaviate_tree_copied_between_keys_keeps_every_key_but_its_chunk_ids(tmp_path: Path) -> None:
    src = Repository.open(tmp_path / "main", passphrase=PASS_A)
    dst = Repository.open(tmp_path / "offsite", passphrase=PASS_B)
    publish_lines(src, "w1", "weaviate", weaviate_like)
    copy(src, dst)
    before = [json.loads(line) for line in src.open_tree(src.resolve("w1"))]
    after = [json.loads(line) for line in dst.open_tree(dst.resolve("w1"))]
    assert [{k: v for k, v in d.items() if k != "c"} for d in after] == [{k: v for k, v in d.items() if k != "c"} for d in before]
    for old, new in zip(before, after, strict=True):
        assert [src.read_chunk(bytes.fromhex(c)) for c in old.get("c", [])] == [
            dst.read_chunk(bytes.fromhex(c)) for c in new.get("c", [])
        ]


def test_a_kind_whose_tree_cannot_be_rewritten_is_refused_between_different_keys(tmp_path: Path) -> None:
    src = Repository.open(tmp_path / "main", passphrase=PASS_A)
    dst = Repository.open(tmp_path / "offsite", passphrase=PASS_B)
    publish_lines(src, "x1", "mystery", weaviate_like)
    with pytest.raises(CopyNotPossible, match="kind 'mystery'") as refused:
        copy(src, dst)
    assert PASS_A not in str(refused.value) and PASS_B not in str(refused.value)
    assert not dst.snapshots() and packs(dst) == 0
    plain_src, plain_dst = Repository.open(tmp_path / "p-main"), Repository.open(tmp_path / "p-offsite")
    publish_lines(plain_src, "x1", "mystery", weaviate_like)
    copy(plain_src, plain_dst)  # same (no) key: ids are unchanged, nothing to rewrite
    assert plain_dst.tree_bytes(plain_dst.resolve("x1"))


def test_a_tree_naming_something_else_than_a_chunk_id_is_refused(tmp_path: Path) -> None:
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    publish(src, "h1", [ROOT, b'{"p":"x","t":"f","m":420,"mt":0,"c":["../../etc/passwd"]}'])  # as an attacker could
    with pytest.raises(CopyNotPossible, match="not a chunk id"):
        copy(src, dst)
    assert not dst.snapshots()


def test_a_tree_line_nested_deeper_than_python_parses_is_refused_not_a_crash(tmp_path: Path) -> None:
    """A line of 100 000 `[`: json.loads raised RecursionError, which escaped the copy run as an
    untyped error; it is a line that is not JSON, and the copy is refused naming the snapshot."""
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    publish(src, "h1", [ROOT, b"[" * 100_000])  # as an attacker could
    with pytest.raises(CopyNotPossible, match=r"h1.*not JSON"):
        copy(src, dst)
    assert not dst.snapshots()


def test_no_checkpoint_of_a_copy_is_recorded_twice_neither_at_its_end_nor_on_a_resume_there(tree: Path, tmp_path: Path) -> None:
    """A checkpoint at every line (the clock's, as on a slow disk): the last line's is the step's
    last, not recorded again as its closing one; and a copy stopped right after it resumes at
    the tree's end recording nothing more (issue 22's 30-job run found both in the log)."""
    src, dst = Repository.open(tmp_path / "main"), Repository.open(tmp_path / "offsite")
    backup(src, tree, "b1")
    every_line = dataclasses.replace(SMALL, checkpoint_seconds=0)
    _work, whole = copy(src, dst, "copy1", tuning=every_line)
    cursors = [json.dumps(c["cursor"], sort_keys=True) for c in whole.checkpoints]
    lines = sum(1 for _ in src.open_tree(src.resolve("b1")))
    assert len(cursors) == lines == len(set(cursors))

    other = Repository.open(tmp_path / "second")
    ctx = MemoryRunContext(run_id="copy2", stop_after_checkpoints=lines)  # stops after the last line's
    with pytest.raises(RunStopped):
        copy(src, other, "copy2", ctx=ctx, tuning=every_line)
    assert len(ctx.checkpoints) == lines and not other.snapshots()
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    copy(src, other, "copy2", ctx=ctx, tuning=every_line)
    assert len(ctx.checkpoints) == lines  # the resume at the end recorded nothing again
    assert [s.id for s in other.snapshots()] == ["b1"] and verify_all(other) > 0

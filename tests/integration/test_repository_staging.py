"""A run's staging in a real repository (issue 14, finding 9): removed once the run ended, and a
run that is resumed anyway fails cleanly. The daemon's part is in tests/e2e/test_repository_hygiene.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import prune
from davit.adapters.repository.staging import StagingGone, remove_run_staging
from davit.domain.errors import PermanentError, RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import backup


def test_a_run_resumed_after_its_staging_was_removed_fails_instead_of_publishing_part_of_a_tree(tmp_path: Path) -> None:
    """Finding 9's other side: davitd removes a failed run's staging when it ends, and an
    operator may still `davit resume` it. The resumed store must not extend the missing staged
    tree with zeros (or publish only what came after its checkpoint): it fails, saying why."""
    source = tmp_path / "many"
    source.mkdir()
    for i in range(40):
        (source / f"f{i:02d}.bin").write_bytes(os.urandom(100_000))
    repo = Repository.open(tmp_path / "repo")
    ctx = MemoryRunContext(run_id="b1", stop_after_checkpoints=2)
    with pytest.raises(RunStopped):
        backup(repo, source, "b1", ctx)
    assert ctx.cursors["store"]["tree_bytes"] > 0
    assert remove_run_staging(repo.root, "b1") == [str(repo.root / "staging" / "b1")]
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    with pytest.raises(StagingGone, match="start a new run"):
        backup(repo, source, "b1", ctx)
    assert repo.snapshots() == []


def _stored_chunk(repo: Repository, data: bytes) -> bytes:
    """`data` stored as a chunk in a pack of its own, as a backup's store step does it."""
    cid, stored, codec = repo.encode(data)
    assert stored is not None
    with repo.locked(exclusive=False):
        pack = repo.new_pack()
        pack.add(cid, stored, len(data), codec)
        repo.seal_pack(pack)
    return cid


def _tree_line(cid: bytes) -> bytes:
    # a files-tree line: pruning reads only its `c` (chunk ids) key
    return json.dumps({"p": cid.hex()[:8], "t": "f", "m": 0o644, "mt": 0, "c": [cid.hex()]}).encode() + b"\n"


def test_prune_keeps_the_chunks_named_by_a_staging_tree_made_through_the_repository_and_only_while_it_is_there(
    tmp_path: Path,
) -> None:
    """Issue 16, part 4: the repository owns its staging. A run's tree staged where
    `Repository.staging` says (a whole run, or a MongoDB collection's part `<run>.c<N>`) protects
    its chunks from a prune in progress; once davitd removes the run's staging they go."""
    repo = Repository.open(tmp_path / "repo")
    whole, part, unnamed = (_stored_chunk(repo, os.urandom(4096)) for _ in range(3))
    for staging, cid in ((repo.staging("w1"), whole), (repo.staging("m1", part=3), part)):
        with staging.reopen_tree(0) as tree:
            tree.write(_tree_line(cid))
    assert repo.staging("m1", part=3).path == repo.root / "staging" / "m1.c3"
    assert (repo.staging("w1").path.stat().st_mode & 0o777) == 0o700

    prune(repo, grace_seconds=0)
    assert repo.missing_chunks([whole, part, unnamed]) == {unnamed}

    # davitd's clean-up of an ended run finds the part through the same names
    assert remove_run_staging(repo.root, "m1") == [str(repo.root / "staging" / "m1.c3")]
    repo.staging("w1").remove()
    prune(repo, grace_seconds=0)
    assert repo.missing_chunks([whole, part]) == {whole, part}


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", "r1.c0", ".hidden"])
def test_a_name_that_is_not_a_run_id_gets_no_staging_directory(tmp_path: Path, run_id: str) -> None:
    """A staging name is `<run>` or `<run>.c<N>`: anything that would land elsewhere in the
    repository, or that the clean-up would read as another run's part, is refused."""
    repo = Repository.open(tmp_path / "repo")
    with pytest.raises(PermanentError, match="not a run id"):
        repo.staging(run_id)


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_a_symlink_or_file_planted_at_a_runs_staging_is_refused_and_nothing_is_written_outside_the_repository(
    tmp_path: Path, planted: str
) -> None:
    """Someone who can write the repository plants `staging/<run>` before the run stages there:
    a symlink to a directory elsewhere made the backup write its staged tree (the names of every
    file it stored) there, outside the repository; the run now fails, naming the path."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("hello")
    repo = Repository.open(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    place = repo.root / "staging" / "b1"
    place.parent.mkdir(exist_ok=True)
    if planted == "symlink":
        place.symlink_to(outside)
    else:
        place.write_text("not a directory\n")
    with pytest.raises(PermanentError, match="staging/b1"):
        backup(repo, source, "b1")
    assert list(outside.iterdir()) == []
    assert repo.snapshots() == []

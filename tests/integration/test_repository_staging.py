"""A run's staging in a real repository (issue 14, finding 9): removed once the run ended, and a
run that is resumed anyway fails cleanly. The daemon's part is in tests/e2e/test_repository_hygiene.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.repository.repository import Repository
from adapters.repository.staging import StagingGone, remove_run_staging
from domain.errors import RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import backup


def test_a_run_resumed_after_its_staging_was_removed_fails_instead_of_publishing_part_of_a_tree(
        tmp_path: Path) -> None:
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

"""What a files backup or restore says it amounts to (its progress bar's 100%): a first backup's
scan, a later backup's parent snapshot, a restore's snapshot; each equals what the step then did."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.adapters.files.backup import STORE
from davit.adapters.files.restore import RESTORE
from davit.adapters.files.totals import TreeScan
from davit.adapters.files.tree import walk
from davit.adapters.repository.repository import Repository
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import backup, restore


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for d in range(3):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(20):
            (root / f"d{d}" / f"f{i}.bin").write_bytes(os.urandom(1000 * (i + 1)))
    os.symlink("d0/f0.bin", root / "link")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo")


def test_a_first_backups_scan_counts_what_the_store_then_stores(source: Path, repo: Repository) -> None:
    scanned = MemoryRunContext(run_id="b1")
    with TreeScan(scanned, STORE, lambda: walk(source, [])) as scan:
        scan.wait()  # (beside a store, whose end stops it, it may not get this far)
    done = backup(repo, source, "b1").cursors[STORE]
    # 60 files, 3 directories, a link, the root
    assert scanned.totals[STORE] == (done["bytes_done"], done["items"]) == (sum(1000 * (i + 1) for i in range(20)) * 3, 65)


def test_a_later_backup_takes_the_parent_snapshots_figures(source: Path, repo: Repository) -> None:
    first = backup(repo, source, "b1").cursors[STORE]
    (source / "d1" / "new.txt").write_bytes(b"12345")
    second = backup(repo, source, "b2", MemoryRunContext(run_id="b2"))
    # the parent's: an estimate, one file short of what this backup then stored
    assert second.totals[STORE] == (first["bytes_done"], first["items"])
    assert second.cursors[STORE]["items"] == first["items"] + 1


def test_a_restore_knows_the_snapshots_size(source: Path, repo: Repository, tmp_path: Path) -> None:
    made = backup(repo, source, "b1").cursors[STORE]
    _work, ctx = restore(repo, tmp_path / "out")
    assert ctx.totals[RESTORE] == (ctx.cursors[RESTORE]["bytes_done"], ctx.cursors[RESTORE]["items"])
    assert ctx.totals[RESTORE] == (made["bytes_done"], made["items"])

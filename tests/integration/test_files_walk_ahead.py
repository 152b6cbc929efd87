"""The files backup's walk runs ahead of the store in a thread of its own (`_walk_ahead`), so
its listings and lstat calls leave the storing thread; that thread ends with the step, also when
the step is stopped midway, and a resumed run stores every file once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import FILE, read_lines
from davit.adapters.runwork import RunInputs
from davit.domain.errors import RunStopped
from davit.domain.jobs import FilesBackupJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL


class RecordingWalk(FilesBackupWork):
    """Notes the name of the thread each entry of the walk is made in."""

    walked_in: set[str] = set()

    def _walk(self) -> Iterator[Any]:
        for item in super()._walk():
            type(self).walked_in.add(threading.current_thread().name)
            yield item


def _tree(root: Path, files: int) -> None:
    for d in range(4):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(files // 4):
            (sub / f"f{i:04}").write_bytes(os.urandom(200 + i % 7 * 4000))


def _work(repo: Repository, source: Path, run_id: str) -> FilesBackupWork:
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    return RecordingWalk(RunInputs(spec, run_id, SMALL, repo=repo))


def _walk_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "davit-walk" and t.is_alive()]


def test_the_walk_runs_in_its_own_thread_and_ends_with_the_step(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tree(source, 200)
    repo = Repository.open(tmp_path / "repo")
    RecordingWalk.walked_in = set()
    work, ctx = _work(repo, source, "b1"), MemoryRunContext(run_id="b1")
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    assert RecordingWalk.walked_in == {"davit-walk"}
    assert _walk_threads() == []
    stored = [e for e in read_lines(repo.open_tree(repo.resolve("b1"))) if e.type == FILE]
    assert len(stored) == 200


def test_a_store_stopped_midway_stops_its_walk_and_the_resume_stores_every_file_once(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tree(source, 400)
    repo = Repository.open(tmp_path / "repo")
    work = _work(repo, source, "b1")
    # SMALL's 256 KiB packs: the first checkpoint comes long before the walk's end
    ctx = MemoryRunContext(run_id="b1", stop_after_checkpoints=1)
    work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert _walk_threads() == []  # not left blocked on a full queue, holding directory descriptors
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    resumed = _work(repo, source, "b1")
    resumed.run(ctx)
    resumed.finish(ctx)
    stored = [e.path for e in read_lines(repo.open_tree(repo.resolve("b1"))) if e.type == FILE]
    assert sorted(stored) == sorted(str(p.relative_to(source)) for p in source.rglob("f*"))
    assert len(stored) == len(set(stored)) == 400

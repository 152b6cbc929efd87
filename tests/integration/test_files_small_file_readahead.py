"""Small files read ahead of the writer: a worker task of several small files takes one of the
store's in-flight slots (`inflight_chunks`), as one large chunk does, not one per file, so
while the writer waits on one task the walk goes on sending the next ones to the workers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.files import backup as backup_module
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from tests.integration.test_files_adapter import backup, restore

INFLIGHT = 4


def test_while_the_first_small_file_task_is_slow_the_next_tasks_are_sent_one_slot_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(200):
        (source / f"f{i:03d}.txt").write_bytes(f"small file {i}\n".encode() * (i + 1))
    sent: list[int] = []
    enough = threading.Event()
    seen_while_slow: list[int] = []
    real_send, real_read = backup_module._SmallFiles.send, backup_module._read_all_whole

    def counted_send(self: Any) -> Any:
        if self.future is None:
            sent.append(len(self.files))
            if len(sent) >= INFLIGHT:
                enough.set()
        return real_send(self)

    def first_task_slow(repo: Any, files: Any, limit: int) -> Any:
        if files[0][1].entry.path == "f000.txt":
            enough.wait(timeout=20)  # a slow disk under the first task; the walk should go on meanwhile
            seen_while_slow.append(len(sent))
        return real_read(repo, files, limit)

    monkeypatch.setattr(backup_module._SmallFiles, "send", counted_send)
    monkeypatch.setattr(backup_module, "_read_all_whole", first_task_slow)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1", tuning=Tuning(checkpoint_seconds=60, inflight_chunks=INFLIGHT, workers=2))

    assert seen_while_slow and seen_while_slow[0] >= INFLIGHT, f"tasks sent while the first was read: {seen_while_slow}"
    restore(repo, tmp_path / "out", snapshot="b1")
    for path in source.iterdir():
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes(), path.name

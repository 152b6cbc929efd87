"""A restore whose target disk fills up: the run fails at once as `StorageFull` (no retry loop
against a full disk), and once the operator makes room, `davit resume` finishes it from its
last checkpoint instead of starting over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, remount_small_disk, tree_digest, write_job

pytestmark = [pytest.mark.e2e]


def test_a_restore_onto_a_full_disk_fails_at_once_and_resumes_after_room_is_made(
    davit: Davit, tmp_path: Path, small_disk: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(12):
        (source / f"part{i:02d}.bin").write_bytes(os.urandom(1 << 20))
    davit.configure("[data_path]\ncheckpoint_seconds = 0.2\n[retry]\nmax_attempts = 5\n")
    davit.start()
    write_job(davit, "src.toml", f'name = "src"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    assert davit.wait_run_state("src", {"succeeded", "failed"}, timeout=60)["state"] == "succeeded"

    target = small_disk / "restored"
    write_job(davit, "back.toml", f'name = "back"\nkind = "files.restore"\n[source]\njob = "src"\n[target]\npath = "{target}"\n')
    failed = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=60)
    assert failed["state"] == "failed" and failed["error_type"] == "StorageFull" and failed["attempt"] == 1, failed
    assert "no space left" in failed["error"]
    assert davit.proc is not None and davit.proc.poll() is None

    remount_small_disk(small_disk, 64)
    assert davit.cli("resume", failed["run_id"]).stdout.strip() == failed["run_id"]
    done = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=60)
    assert done["state"] == "succeeded" and done["run_id"] == failed["run_id"], done
    assert tree_digest(target) == tree_digest(source)
    assert len(davit.runs("back")) == 1
    done_counts = [
        int(e[3]["items_done"]) for e in davit.events(f"stream = 'run-{failed['run_id']}' AND type = 'CheckpointRecorded'")
    ]
    assert done_counts == sorted(done_counts), "the resumed restore went back to an earlier point"

"""`kill -9` of davitd in the middle of a large backup and of a large restore: after a restart
the run completes, the result is identical, and the log shows no chunk written twice."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, make_big_tree, tree_digest, write_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = "[data_path]\npack_size_mib = 8\ncheckpoint_seconds = 0.5\n"


def checkpoints(davit: Davit, run_id: str) -> list[dict[str, object]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")]


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("big") / "tree"
    make_big_tree(root, 520)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


def kill_after_checkpoints(davit: Davit, job: str, count: int) -> str:
    def enough() -> bool:
        runs = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
        return bool(runs) and len(checkpoints(davit, runs[-1][3]["run_id"])) >= count

    davit.wait_for(enough, 120, f"{count} checkpoints of {job}", poll=0.005)
    davit.kill9()
    [queued] = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
    return str(queued[3]["run_id"])


def test_backup_killed_mid_run_resumes_completes_and_writes_no_chunk_twice(davit: Davit, big_tree: Path, tmp_path: Path) -> None:
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{big_tree}"\n')
    run_id = kill_after_checkpoints(davit, "big", 3)
    before = checkpoints(davit, run_id)
    state_at_kill = davit.runs("big")[-1]["state"]
    assert state_at_kill == "running", "the kill must land in the middle of the backup"

    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    history = [e["type"] for e in davit.history(run_id)]
    assert history.count("RunInterrupted") == 1 and history.count("RunRequeued") == 1
    after = checkpoints(davit, run_id)
    written = [c for cp in after for c in cp["chunks_written"]]  # type: ignore[attr-defined]
    assert len(written) == len(set(written)), "a chunk was written twice"
    assert len(after) > len(before)
    # the resumed run continued from the last checkpoint: progress never went backwards
    done = [cp["items_done"] for cp in after]
    assert done == sorted(done)

    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "files.restore"\n[source]\njob = "big"\n[target]\npath = "{tmp_path / "restored"}"\n',
    )
    restored = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert restored["state"] == "succeeded", restored
    assert tree_digest(tmp_path / "restored") == tree_digest(big_tree)
    assert "0 problems" in davit.cli("verify", run_id).stdout
    assert "hash chain intact" in davit.cli("log", "verify").stdout


def test_restore_killed_mid_run_resumes_and_the_tree_is_identical(davit: Davit, big_tree: Path, tmp_path: Path) -> None:
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{big_tree}"\n')
    assert davit.wait_run_state("big", {"succeeded", "failed"}, timeout=300)["state"] == "succeeded"
    target = tmp_path / "restored"
    write_job(davit, "back.toml", f'name = "back"\nkind = "files.restore"\n[source]\njob = "big"\n[target]\npath = "{target}"\n')
    run_id = kill_after_checkpoints(davit, "back", 2)
    assert davit.runs("back")[-1]["state"] == "running"
    items_at_kill = max(int(cp["items_done"]) for cp in checkpoints(davit, run_id))  # type: ignore[call-overload]

    davit.start()
    run = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    assert run["run_id"] == run_id and run["interruptions"] == 1
    after = checkpoints(davit, run_id)
    done = [int(cp["items_done"]) for cp in after]  # type: ignore[call-overload]
    assert done == sorted(done) and done[-1] == len(tree_digest(big_tree)) + 1  # + the root directory
    assert any(d > items_at_kill for d in done)
    assert tree_digest(target) == tree_digest(big_tree)
    assert len(davit.runs("back")) == 1  # the restore ran once, resumed; never started over

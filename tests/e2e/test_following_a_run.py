"""Following a run as an operator does: `davit show RUN --follow` piped (plain lines, no control
characters) while davitd backs up a tree, ending with the outcome and its exit status; the
progress rides on the checkpoints (no event of a new type, none more per checkpoint); davitd's
log in JSON lines carrying the run's fields."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Davit, make_big_tree, write_job

pytestmark = [pytest.mark.e2e]

CONFIG = '[daemon]\nlog_format = "json"\n[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.3\n'
# What a backup's run stream held before issue 20: progress must not add to it.
RUN_EVENT_TYPES = {
    "RunQueued",
    "RunPreparing",
    "RunStarted",
    "StepStarted",
    "CheckpointRecorded",
    "StepCompleted",
    "RunWarning",
    "RunVerifying",
    "RunSucceeded",
}
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def tree_totals(root: Path) -> tuple[int, int]:
    size = entries = 0
    for top, dirs, files in os.walk(root):
        entries += len(dirs) + len(files)
        size += sum(os.lstat(os.path.join(top, f)).st_size for f in files)
    return size, entries + 1  # (and the root itself)


def stopped_mid_store(davit: Davit) -> str:
    """The backup's run id, once davitd was killed with a few store checkpoints recorded."""

    def some_checkpoints() -> bool:
        return len(davit.events("type = 'CheckpointRecorded'")) >= 3

    davit.wait_for(some_checkpoints, 120, "a few checkpoints", poll=0.005)
    davit.kill9()
    return str(davit.events("type = 'RunQueued'")[0][3]["run_id"])


def test_following_a_backup_shows_each_steps_progress_and_ends_with_its_outcome(davit: Davit, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_big_tree(tree, 110)
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')
    run_id = stopped_mid_store(davit)
    out, err = tmp_path / "follow.out", tmp_path / "follow.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # piped: plain lines; it follows a run that davitd, stopped, is not working on
        follower = subprocess.Popen(
            [str(BIN / "davit"), "--home", str(davit.home), "show", run_id[:6], "--follow"], stdout=stdout, stderr=stderr
        )
        deadline = time.monotonic() + 60  # (davit.wait_for insists on a live davitd)
        while " store running " not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        davit.start()  # davitd resumes the run; the follower sees it through to its end
        code = follower.wait(300)
    followed = subprocess.CompletedProcess(follower.args, code, out.read_text(), err.read_text())

    assert followed.returncode == 0, followed.stderr
    assert followed.stderr.strip().splitlines()[-1] == f"{run_id} succeeded"
    lines = followed.stdout.splitlines()
    assert not [line for line in lines if CONTROL.search(line)], "plain lines carry no control characters"
    size, entries = tree_totals(tree)
    store = [line for line in lines if " store " in line]
    assert any("running" in line and "%" in line and "ETA" in line for line in store), "\n".join(lines)
    assert store[-1].endswith("100.0% " + store[-1].split("100.0% ")[-1]) and " done " in store[-1]
    assert any(line.endswith(f"run {run_id} succeeded") for line in lines)

    events = [e for e in davit.events(f"stream = 'run-{run_id}'")]
    assert {e[2] for e in events} <= RUN_EVENT_TYPES | {"RunInterrupted", "RunRequeued"}
    checkpoints = [e[3] for e in events if e[2] == "CheckpointRecorded" and e[3]["step"] == "store"]
    assert len(checkpoints) >= 3
    # the scan beside the store told the tree's size: the last checkpoints carry it
    assert (checkpoints[-1]["bytes_total"], checkpoints[-1]["items_total"]) == (size, entries)
    assert checkpoints[-1]["bytes_done"] == size

    # davitd's log: every line one JSON object; the run's lines name it, its job and kind
    log_lines = [json.loads(line) for line in davit.logs[-1].read_text().splitlines() if line.startswith("{")]
    run_lines = [line for line in log_lines if line.get("run_id") == run_id]
    assert {"job": "big", "kind": "files.backup"}.items() <= run_lines[0].items()
    states = [line["message"] for line in run_lines if "(attempt" in line["message"] or "succeeded" in line["message"]]
    # after the restart: preparing, running, verifying, succeeded, one line each
    assert [m.split(") ")[1].split(" ")[0] for m in states] == ["preparing", "running", "verifying", "succeeded"], states


def test_a_second_backup_takes_its_total_from_the_parent_snapshot(davit: Davit, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_big_tree(tree, 60)
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')
    first = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=300)
    assert first["state"] == "succeeded"
    (tree / "new.txt").write_text("one more file")
    davit.cli("run", "big", "--wait")
    second = davit.runs("big")[-1]
    checkpoints = [
        e[3]
        for e in davit.events(f"stream = 'run-{second['run_id']}' AND type = 'CheckpointRecorded'")
        if e[3]["step"] == "store"
    ]
    # the parent's figures, as its manifest counts them: the tree before the new file
    size, entries = tree_totals(tree)
    assert checkpoints and all(c["bytes_total"] == size - len("one more file") for c in checkpoints)
    assert all(c["items_total"] == entries - 1 for c in checkpoints)


def test_following_a_run_that_fails_exits_non_zero_with_its_error(davit: Davit, tmp_path: Path) -> None:
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "gone.toml", f'name = "gone"\nkind = "files.backup"\n[source]\npath = "{tmp_path / "missing"}"\n')
    davit.wait_for(lambda: bool(davit.events("type = 'RunQueued'")), 30, "the run to be queued")
    run_id = davit.events("type = 'RunQueued'")[0][3]["run_id"]
    followed = davit.cli("show", run_id, "--follow", check=False, timeout=300)
    assert followed.returncode == 1
    assert followed.stderr.strip().splitlines()[-1].startswith(f"{run_id} failed: ")

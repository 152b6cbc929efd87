"""A first backup of many small files, the case issue 18's walk in a thread of its own is for
(its listings and lstat calls run ahead of the store): `kill -9` of davitd at random instants
resumes it without redoing committed work, into a snapshot that restores identical to the
source; a `davit cancel` while it walks ends the run promptly, with no snapshot."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, tree_digest, write_job
from tests.e2e.test_random_kill_points import SEED, assert_committed_work_was_not_redone, kill_at_random_instants

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = "[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.3\n"


def small_files(root: Path, count: int) -> None:
    """`count` small files (a few hundred bytes, some identical) in nested directories."""
    rnd = random.Random(18)
    for i in range(count):
        d = root / f"a{i % 7}" / f"b{i % 53}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06}").write_bytes(rnd.randbytes(rnd.randint(0, 600)) if i % 5 else b"same\n")


def test_a_first_backup_of_many_small_files_survives_kill_9_at_random_instants(davit: Davit, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    why = f"DAVIT_KILL_SEED={SEED}"
    tree = tmp_path / "tree"
    small_files(tree, 20_000)
    davit.configure(CONFIG)
    write_job(davit, "many.toml", f'name = "many"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')

    kill_at_random_instants(davit, "many", rng, why)
    [run] = davit.runs("many")
    assert run["interruptions"] >= 1, why
    assert_committed_work_was_not_redone(davit, "many", why)
    [snapshot] = davit.json_lines("snapshots")
    assert "0 problems" in davit.cli("verify", snapshot["id"]).stdout, why

    target = tmp_path / "restored"
    write_job(davit, "back.toml", f'name = "back"\nkind = "files.restore"\n[source]\njob = "many"\n[target]\npath = "{target}"\n')
    restored = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert restored["state"] == "succeeded", restored
    assert tree_digest(target) == tree_digest(tree), why


def test_a_cancel_while_the_walk_is_under_way_ends_the_run_promptly(davit: Davit, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    small_files(tree, 60_000)  # a backup of several seconds: the cancel lands while it walks
    davit.configure(CONFIG)
    davit.start()
    write_job(davit, "many.toml", f'name = "many"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')
    davit.wait_for(lambda: any(e[2] == "StepStarted" for e in davit.events()), 60, "the store step", poll=0.01)
    run_id = next(e[3]["run_id"] for e in davit.events("type = 'RunQueued'"))
    stream = f"stream = 'run-{run_id}'"

    def types() -> list[str]:
        return [e[2] for e in davit.events(stream)]

    asked = time.monotonic()  # the CLI's start included: a second of CPU on a loaded machine
    result = davit.cli("cancel", run_id[:6], check=False)
    ended = {"RunCancelled", "RunSucceeded", "RunFailed"}
    davit.wait_for(lambda: bool(ended & set(types())), 30, "the end of the run", poll=0.01)
    took = time.monotonic() - asked
    state = davit.runs("many")[-1]["state"]
    print(f"the cancel: {state} {took:.2f} s after it was asked")
    assert result.returncode == 0 or state == "succeeded", result
    if state == "cancelled":
        # the walk's thread stopped with the step: one left walking the 60k files to their end
        # (or blocked on its full queue) would hold the step's end back
        assert took < 10, f"the run ended {took:.1f} s after the cancel was asked"
        assert davit.json_lines("snapshots") == []
    else:
        assert state == "succeeded" and "RunCancelling" not in types()  # it was past publish first
    # the daemon is still healthy: the next backup of the same tree runs to the end
    again = davit.cli("run", "many", "--wait", "--timeout", "300", check=False, timeout=330)
    assert again.returncode == 0, again
    assert davit.runs("many")[-1]["state"] == "succeeded"

"""`kill -9` of davitd at random instants, several times in one run, for a backup and then for a
restore: the run still ends `succeeded` exactly once, no chunk is written twice, progress never
goes backwards, the snapshot verifies, the restored tree is identical and the log's hash chain
is intact. The instants are drawn from a seeded generator; the seed is in every failure message
(set DAVIT_KILL_SEED to replay one).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, make_big_tree, tree_digest, write_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.3\n"
KILLS = 4
SEED = int(os.environ.get("DAVIT_KILL_SEED", random.SystemRandom().randrange(1 << 30)))


def run_events(davit: Davit, job: str, types: str) -> list[dict[str, object]]:
    """Read straight from the event log (cheap enough to poll, unlike a CLI call)."""
    runs = [e[3]["run_id"] for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
    if not runs:
        return []
    return [e[3] for e in davit.events(f"stream = 'run-{runs[-1]}' AND type IN ({types})")]


def checkpoints(davit: Davit, job: str) -> list[dict[str, object]]:
    return run_events(davit, job, "'CheckpointRecorded'")


def finished(davit: Davit, job: str) -> bool:
    return bool(run_events(davit, job, "'RunSucceeded', 'RunFailed'"))


def kill_at_random_instants(davit: Davit, job: str, rng: random.Random, why: str) -> int:
    """Start davitd, let the run get somewhere random, kill -9; again, up to KILLS times."""
    kills = 0
    for attempt in range(KILLS):
        davit.start()
        if finished(davit, job):
            break
        seen = len(checkpoints(davit, job))
        target = seen + rng.randint(0 if attempt else 1, 4)  # the first kill always lands mid-run
        deadline = time.monotonic() + 60
        while len(checkpoints(davit, job)) < target and not finished(davit, job) and time.monotonic() < deadline:
            time.sleep(0.01)
        # the first kill lands right after a checkpoint: a random wait could outlast the whole run
        # on a fast machine (a restore from a warm page cache), leaving nothing to resume
        time.sleep(rng.uniform(0, 0.4) if attempt else 0)
        davit.kill9()
        kills += 1
    if davit.proc is None or davit.proc.poll() is not None:
        davit.start()
    run = davit.wait_run_state(job, {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", f"{why}: {run}"
    return kills


def assert_committed_work_was_not_redone(davit: Davit, job: str, why: str) -> None:
    cps = checkpoints(davit, job)
    written = [c for cp in cps for c in cp.get("chunks_written", [])]  # type: ignore[attr-defined]
    assert len(written) == len(set(written)), f"{why}: a chunk was written twice"
    done = [int(cp["items_done"]) for cp in cps]  # type: ignore[call-overload]
    assert done == sorted(done), f"{why}: progress went backwards: {done}"


def test_backup_and_restore_survive_kill_9_at_random_instants(davit: Davit, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    why = f"DAVIT_KILL_SEED={SEED}"
    tree = tmp_path / "tree"
    make_big_tree(tree, 260)
    davit.configure(CONFIG)
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')

    kill_at_random_instants(davit, "big", rng, why)
    [run] = davit.runs("big")
    assert 1 <= run["interruptions"] <= KILLS, why
    assert_committed_work_was_not_redone(davit, "big", why)
    [snapshot] = davit.json_lines("snapshots")
    assert snapshot["id"] == run["run_id"], why
    assert "0 problems" in davit.cli("verify", snapshot["id"]).stdout, why

    target = tmp_path / "restored"
    write_job(davit, "back.toml", f'name = "back"\nkind = "files.restore"\n[source]\njob = "big"\n[target]\npath = "{target}"\n')
    davit.stop()
    kill_at_random_instants(davit, "back", rng, why)
    [restore] = davit.runs("back")  # one run: resumed each time, never started over
    assert 1 <= restore["interruptions"] <= KILLS, why
    assert_committed_work_was_not_redone(davit, "back", why)
    assert tree_digest(target) == tree_digest(tree), why
    assert "hash chain intact" in davit.cli("log", "verify").stdout, why

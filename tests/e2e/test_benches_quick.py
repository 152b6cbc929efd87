"""Every benchmark, run once at its tiny size (`--quick`) as an operator would run it, so that none
of them rots between the times someone measures with it.

Each bench runs as a subprocess with this checkout on PYTHONPATH (its daemons run this code) and
must end with exit 0 (every goal met) or 3 (it measured everything and missed a goal: at a tiny
size a ratio means nothing, so a missed goal never fails here), print one goal line per goal it
declares, and write the same lines as JSON for `make bench`'s summary. Never a speed: speed is
what the full-size benches are for. Benches that need the shared peers get them as every test
does (skipped with a hint locally, failed under CI=true when a peer is missing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GOALS_MISSED = 3  # bench/benchlib.py GOALS_MISSED, as documented in bench/README.md
VERDICTS = {"met", "missed", "skipped"}

# bench -> the shared peers it needs (remote.py starts its own sshd and SeaweedFS, from the
# binary the seaweedfs peer's set-up builds and caches)
BENCHES = {
    "files": (),
    "eventlog": (),
    "daemon": (),
    "remote": ("seaweedfs",),
    "mongo": ("mongo",),
    "weaviate": ("weaviate",),
    "docker": ("docker", "ssh"),
    "sql": ("postgres", "mariadb"),
    "eventlog_postgres": ("postgres",),
}


def run_quick(bench: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]]]:
    goals, work = tmp / "goals.json", tmp / "work"  # apart: some benches empty their workdir
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--quick", "--workdir", str(work), "--goals-json", str(goals)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, GOALS_MISSED), (
        f"bench/{bench}.py --quick exited {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr (tail) ---\n{proc.stderr[-4000:]}"
    )
    return proc, json.loads(goals.read_text())


@pytest.mark.parametrize("bench", list(BENCHES))
def test_bench_runs_at_its_quick_size_and_prints_a_line_per_goal(
    bench: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for peer in BENCHES[bench]:
        request.getfixturevalue(f"{peer}_peer")
    proc, goals = run_quick(bench, tmp_path)

    lines = [line for line in proc.stdout.splitlines() if line.startswith(f"GOAL {bench}: ")]
    assert goals, f"bench/{bench}.py wrote no goal"
    assert len(lines) == len(goals)
    for goal, line in zip(goals, lines, strict=True):
        assert goal["verdict"] in VERDICTS
        assert line.startswith(f"GOAL {bench}: {goal['measure']} | davit {goal['davit']} | baseline {goal['baseline']} |")
        assert f"| {goal['verdict']}" in line and "| load " in line
    assert (proc.returncode == GOALS_MISSED) == any(g["verdict"] == "missed" for g in goals)

    summary = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "summary.py"), str(tmp_path / "goals.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert summary.returncode in (0, GOALS_MISSED), summary.stderr
    for goal in goals:
        assert goal["measure"] in summary.stdout

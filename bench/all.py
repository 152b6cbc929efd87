"""`make bench`: every benchmark, one after the other, then one summary table of every goal line.

Run: `.venv/bin/python bench/all.py [--quick] [--only files,mongo,...] [--goals-dir DIR]`.

Each bench runs as its own process with `--goals-json DIR/<bench>.json` (and `--quick` if
asked) and this checkout first on PYTHONPATH, so the daemons it starts run this code. A bench
that needs the shared test peers (`make peers`) runs only if they answer, found as the tests find
them (the peers' state file, `.peers/state.json` or DAVIT_PEERS_STATE); otherwise it is skipped
with one line, or, with CI=true, counted as failed. Exit 0 if every bench ran and met its goals,
3 if every bench ran but a goal was missed, 1 if a bench failed or could not run under CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import GOALS_MISSED, load_note
from summary import read, render

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.peers: the peers' state file and their checks

from tests.peers.common import state_path  # noqa: E402
from tests.peers.fixtures import CHECKS  # noqa: E402  (the peers' checks, as the tests use them)
from tests.peers.state import load  # noqa: E402

# bench -> the shared peers it needs (remote.py starts its own servers, but from the SeaweedFS
# binary that `python -m tests.peers up` builds and caches: the seaweedfs peer stands for it)
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


def missing_peers(names: tuple[str, ...]) -> list[str]:
    state = load()
    return [n for n in names if not (state.get(n, {}).get("ok") and CHECKS[n](state[n]))]


def run(bench: str, quick: bool, goals: Path) -> int:
    argv = [sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--goals-json", str(goals / f"{bench}.json")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    print(f"\n=== bench/{bench}.py{' --quick' if quick else ''} ({load_note()}) ===", flush=True)
    start = time.monotonic()
    code = subprocess.run([*argv, *(["--quick"] if quick else [])], cwd=ROOT, env=env).returncode
    print(f"=== bench/{bench}.py exited {code} after {time.monotonic() - start:.0f} s ===", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every bench at its tiny size (as CI runs them)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated, of: {', '.join(BENCHES)}")
    parser.add_argument("--goals-dir", type=Path, default=ROOT / ".bench" / "goals", help="where the goal files go")
    args = parser.parse_args()
    shutil.rmtree(args.goals_dir, ignore_errors=True)
    args.goals_dir.mkdir(parents=True)
    failed, skipped, missed = [], [], False
    for bench in args.only.split(","):
        absent = missing_peers(BENCHES[bench])
        if absent:
            why = f"bench/{bench}.py needs the peers {', '.join(absent)}, which do not answer (make peers; state: {state_path()})"
            (failed if os.environ.get("CI") == "true" else skipped).append(why)
            print(f"\n{'FAILED' if os.environ.get('CI') == 'true' else 'SKIPPED'}: {why}", flush=True)
            continue
        code = run(bench, args.quick, args.goals_dir)
        missed = missed or code == GOALS_MISSED
        if code not in (0, GOALS_MISSED):
            failed.append(f"bench/{bench}.py exited {code}")
    print(render(read([args.goals_dir])))
    for line in skipped + failed:
        print(line)
    print(f"at the end: {load_note()}")
    return 1 if failed else GOALS_MISSED if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())

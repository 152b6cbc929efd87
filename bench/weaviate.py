"""Weaviate benchmark: davit's weaviate.backup and weaviate.restore against the bare client loops.

Run: `.venv/bin/python bench/weaviate.py [--objects N] [--dims D] [--rounds R] [--index hnsw]
[--workdir DIR] [--quick] [--goals-json PATH]` (default 100,000 objects with 384-dim vectors, 3
rounds, flat index (issue 18's goals are stated for it), workdir `./.bench/weaviate/`; `--quick`:
300 objects of 16 dims, one round), against the Weaviate test peer (`python -m tests.peers up
--only weaviate`; its address is read from the peers' state file, `.peers/state.json` or
DAVIT_PEERS_STATE).

Same server, same run, same data:
- bare import: a `collection.batch.fixed_size(batch_size=200, concurrent_requests=2)` loop
  that creates the source collection (random vectors, generated before its clock starts);
- bare iterate: a `collection.iterator(include_vector=True)` loop over it (the ceiling);
- davit backup: `davitd --home H` as a subprocess, a weaviate.backup job file dropped in;
- davit restore: a fresh daemon, a weaviate.restore job restoring it under a new name.
Each bare loop runs in its own Python process, so its peak RSS (`ru_maxrss`) is its own; each
davit operation gets a fresh daemon, and its peak RSS (`VmHWM`) covers start-up and that one
operation. davit's objects/s is timed from its own events: the export (or objects) step's
start to its completion; the whole run's time is shown beside it. With `--rounds R` the four
measurements are repeated R times back to back, each round with the load average at its start
and end, and the ratios' medians are printed: on a shared machine one round proves little.
Every round imports its own bare baseline into a scratch collection next to its davit restore,
in alternating order (odd rounds restore first, even rounds import first), so each restore is
paired with an import under the same load; the source's import (into an empty server, before
the rounds) is never a round's baseline.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

from benchlib import Goals, LogReader, Spec, add_goal_arguments, cpu_count, load_note, table, ts, vm_hwm_mb

# This file is named like the client package: take its directory off the path, so that
# `import weaviate` below finds weaviate-client and not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# --quick (CI's smoke run) uses collections of its own, so that it never meets a full run's on the shared peer.
TAG = "Quick" if "--quick" in sys.argv else ""
SOURCE, RESTORED, BARE = f"BenchWv{TAG}Source", f"BenchWv{TAG}Restored", f"BenchWv{TAG}Bare"

# Issue 18's goals: whole runs (RunPreparing -> RunSucceeded) against the bare loops, median of
# the rounds' ratios (davit objects/s / bare objects/s), and the peak RSS of every davitd.
GOALS = {
    "backup": Spec("backup, whole run vs bare iterator", ">=", 0.9, "x", 18),
    "restore": Spec("restore, whole run vs bare batch import", ">=", 0.9, "x", 18),
    "rss": Spec("peak RSS, every davitd (goal stated at 100k objects)", "<", 200, " MB", 18),
}


def peer() -> dict[str, Any]:
    """The weaviate peer's address from the peers' state file (DAVIT_PEERS_STATE, as the tests read it)."""
    sys.path.insert(0, str(ROOT))
    from tests.peers.state import load

    state = load().get("weaviate", {})
    if not state.get("ok"):
        sys.exit("the weaviate peer is not up: python -m tests.peers up --only weaviate")
    return dict(state)


def connect(p: dict[str, Any]) -> Any:
    import weaviate

    return weaviate.connect_to_custom(
        http_host=p["host"],
        http_port=p["http_port"],
        http_secure=False,
        grpc_host=p["host"],
        grpc_port=p["grpc_port"],
        grpc_secure=False,
    )


# --- the bare loops, each in its own process ---------------------------------------------------


def bare_import(name: str, count: int, dims: int, index: str) -> dict[str, Any]:
    from weaviate.classes.config import Configure, DataType, Property

    client = connect(peer())
    try:
        if client.collections.exists(name):
            client.collections.delete(name)
        coll = client.collections.create(
            name,
            properties=[Property(name="title", data_type=DataType.TEXT), Property(name="n", data_type=DataType.INT)],
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.flat() if index == "flat" else Configure.VectorIndex.hnsw()
            ),
        )
        # Ids and vectors are made before the clock starts: davit's restore decodes them from its
        # chunks inside its timed run, so the baseline's loop must not spend its time on the
        # random generator either. Float32, as Weaviate stores them; each object's vector becomes
        # a list in the loop, as the restore's does.
        rnd = random.Random(5)
        ids = [uuid.UUID(int=rnd.getrandbits(128), version=4) for _ in range(count)]
        values = array("f", (rnd.random() - 0.5 for _ in range(count * dims)))
        start = time.monotonic()
        with coll.batch.fixed_size(batch_size=200, concurrent_requests=2) as batch:
            for i in range(count):
                batch.add_object(
                    {"title": f"object {i} of the benchmark", "n": i},
                    uuid=ids[i],
                    vector=values[i * dims : (i + 1) * dims].tolist(),
                )
        seconds = time.monotonic() - start
        failed = len(coll.batch.failed_objects)
    finally:
        client.close()
    return {"objects": count - failed, "seconds": seconds, "failed": failed}


def bare_iterate(name: str) -> dict[str, Any]:
    client = connect(peer())
    try:
        start = time.monotonic()
        n = 0
        for obj in client.collections.get(name).iterator(include_vector=True):
            n += 1 if obj.vector else 0
        seconds = time.monotonic() - start
    finally:
        client.close()
    return {"objects": n, "seconds": seconds}


def child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- davit -------------------------------------------------------------------------------------


class Daemon:
    def __init__(self, home: Path, config: str = "") -> None:
        shutil.rmtree(home, ignore_errors=True)
        (home / "jobs.d").mkdir(parents=True)
        if config:
            (home / "davit.toml").write_text(config)
        self.home = home
        self.log = LogReader(home / "state" / "davit.db")
        log = open(home / "davitd.log", "wb")  # noqa: SIM115 (the daemon writes it while it runs)
        self.proc = subprocess.Popen([str(VENV_BIN / "davitd"), "--home", str(home)], stdout=log, stderr=subprocess.STDOUT)
        atexit.register(self.proc.kill)  # a failed run (sys.exit) leaves no davitd behind; a no-op once it exited

    def run(self, job: str, text: str, timeout: float = 1800) -> dict[str, Any]:
        (self.home / "jobs.d" / f"{job}.toml").write_text(text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = [r for r in self.log.after(0) if r.type in ("RunSucceeded", "RunFailed")]
            if ends:
                if ends[-1].type == "RunFailed":
                    sys.exit(f"davit {job} failed: {ends[-1].data}")
                break
            time.sleep(0.2)
        else:
            sys.exit(f"davit {job} did not finish in {timeout}s")
        rss = vm_hwm_mb(self.proc.pid) or 0.0
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        events = self.log.after(0)
        started = {r.data["step"]: ts(r.recorded_at) for r in events if r.type == "StepStarted"}
        done = {r.data["step"]: ts(r.recorded_at) for r in events if r.type == "StepCompleted"}
        data_steps = [s for s in done if s.startswith(("export:", "objects:", "references:"))]
        step_seconds = sum(done[s] - started[s] for s in data_steps)
        run = [ts(r.recorded_at) for r in events if r.type in ("RunPreparing", "RunSucceeded")]
        items = max(
            (
                r.data.get("items_done", 0)
                for r in events
                if r.type == "CheckpointRecorded" and r.data["step"].startswith(("export:", "objects:"))
            ),
            default=0,
        )
        return {"objects": items, "seconds": step_seconds, "run_seconds": run[-1] - run[0], "rss": rss}


def conn_toml(p: dict[str, Any]) -> str:
    return f'host = "{p["host"]}"\nhttp_port = {p["http_port"]}\ngrpc_port = {p["grpc_port"]}\n'


def drop(p: dict[str, Any], *names: str) -> None:
    client = connect(p)
    try:
        for name in names:
            if client.collections.exists(name):
                client.collections.delete(name)
    finally:
        client.close()


def rate(r: dict[str, Any]) -> float:
    return r["objects"] / r["seconds"] if r["seconds"] else 0.0


def bare_import_round(p: dict[str, Any], args: argparse.Namespace, index: int) -> dict[str, Any]:
    bare_in = child(["--child", "import", BARE, str(args.objects), str(args.dims), args.index])
    drop(p, BARE)
    print(f"round {index}: bare import: {bare_in}", flush=True)
    return bare_in


def one_round(p: dict[str, Any], args: argparse.Namespace, index: int) -> dict[str, dict[str, Any]]:
    """bare iterate, davit backup, then davit restore and bare import (in alternating order,
    see the docstring): one figure each, back to back."""
    load = os.getloadavg()[0]
    bare_out = child(["--child", "iterate", SOURCE])
    print(f"round {index}: bare iterate: {bare_out}", flush=True)
    home = args.workdir / f"backup{index}"
    backup = Daemon(home).run(
        "bench-wv", f'name = "bench-wv"\nkind = "weaviate.backup"\n[source]\n{conn_toml(p)}collections = ["{SOURCE}"]\n'
    )
    print(f"round {index}: davit backup: {backup}", flush=True)
    drop(p, RESTORED)
    bare_in = bare_import_round(p, args, index) if index % 2 == 0 else None
    restore = Daemon(args.workdir / f"restore{index}", f'[repositories.bench]\npath = "{home / "repository"}"\n').run(
        "bench-wv-restore",
        f'name = "bench-wv-restore"\nkind = "weaviate.restore"\nrepository = "bench"\n[source]\njob = "bench-wv"\n'
        f'[target]\n{conn_toml(p)}rename = {{ "{SOURCE}" = "{RESTORED}" }}\n',
    )
    print(f"round {index}: davit restore: {restore}", flush=True)
    drop(p, RESTORED)
    if bare_in is None:
        bare_in = bare_import_round(p, args, index)
    shutil.rmtree(home, ignore_errors=True)
    return {
        "bare_out": bare_out,
        "backup": backup,
        "bare_in": bare_in,
        "restore": restore,
        "load": {"start": load, "end": os.getloadavg()[0]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument(
        "--rounds", type=int, default=3, help="repeat the four measurements this many times (the source is imported once)"
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "weaviate")
    ap.add_argument(
        "--index",
        choices=("hnsw", "flat"),
        default="flat",
        help="vector index of the collections (default flat: it imports far faster on small machines)",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    add_goal_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.objects, args.dims, args.rounds = 300, 16, 1
    if args.child:
        rss_kind = args.child[0]
        result = (
            bare_import(args.child[1], int(args.child[2]), int(args.child[3]), args.child[4])
            if rss_kind == "import"
            else bare_iterate(args.child[1])
        )
        result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    p = peer()
    args.workdir.mkdir(parents=True, exist_ok=True)
    drop(p, SOURCE, RESTORED, BARE)
    print(
        f"weaviate {p.get('version')} at {p['host']}:{p['http_port']}; {args.objects:,} objects x "
        f"{args.dims} dims, {args.index} vector index; {cpu_count()} CPUs; {load_note()}",
        flush=True,
    )

    first_import = child(["--child", "import", SOURCE, str(args.objects), str(args.dims), args.index])
    print(f"bare import (the source): {first_import}", flush=True)
    rounds = [one_round(p, args, i + 1) for i in range(args.rounds)]

    rows = []
    for i, r in enumerate(rounds, 1):
        bare_out, backup, bare_in, restore = r["bare_out"], r["backup"], r["bare_in"], r["restore"]
        load = f"{r['load']['start']:.1f}-{r['load']['end']:.1f}"
        rows += [
            [
                str(i),
                "bare iterator(include_vector=True)",
                f"{bare_out['objects']:,}",
                f"{bare_out['seconds']:.1f}",
                f"{rate(bare_out):,.0f}",
                f"{bare_out['rss']:.0f}",
                "1.00x",
                load,
            ],
            [
                str(i),
                "davit weaviate.backup",
                f"{backup['objects']:,}",
                f"{backup['seconds']:.1f} ({backup['run_seconds']:.1f})",
                f"{rate(backup):,.0f}",
                f"{backup['rss']:.0f}",
                f"{rate(backup) / rate(bare_out):.2f}x",
                load,
            ],
            [
                str(i),
                "bare batch.fixed_size import",
                f"{bare_in['objects']:,}",
                f"{bare_in['seconds']:.1f}",
                f"{rate(bare_in):,.0f}",
                f"{bare_in['rss']:.0f}",
                "1.00x",
                load,
            ],
            [
                str(i),
                "davit weaviate.restore",
                f"{restore['objects']:,}",
                f"{restore['seconds']:.1f} ({restore['run_seconds']:.1f})",
                f"{rate(restore):,.0f}",
                f"{restore['rss']:.0f}",
                f"{rate(restore) / rate(bare_in):.2f}x",
                load,
            ],
        ]
    print()
    print(
        table(
            ["round", "operation", "objects", "seconds (run)", "objects/s", "peak RSS MB", "vs bare", "load 1-min"],
            rows,
            title="Weaviate: davit vs the bare client loops (same server, same data)",
        )
    )
    backup_ratios = sorted(rate(r["backup"]) / rate(r["bare_out"]) for r in rounds)
    restore_ratios = sorted(rate(r["restore"]) / rate(r["bare_in"]) for r in rounds)
    print(
        f"\nbackup vs bare iterator: median {statistics.median(backup_ratios):.2f}x "
        f"(rounds {', '.join(f'{x:.2f}' for x in backup_ratios)}); peak RSS max "
        f"{max(r['backup']['rss'] for r in rounds):.0f} MB"
    )
    print(
        f"restore vs bare import:  median {statistics.median(restore_ratios):.2f}x "
        f"(rounds {', '.join(f'{x:.2f}' for x in restore_ratios)}); peak RSS max "
        f"{max(r['restore']['rss'] for r in rounds):.0f} MB; {load_note()}"
    )
    drop(p, SOURCE, RESTORED, BARE)
    goals = Goals("weaviate", GOALS)
    size = f"{args.objects:,} x {args.dims}, {args.index}"
    for key, op, bare, baseline in (("backup", "backup", "bare_out", "iterator"), ("restore", "restore", "bare_in", "import")):
        ratios = [(r[op]["objects"] / r[op]["run_seconds"]) / rate(r[bare]) for r in rounds]
        goals.ratio(
            key,
            statistics.median(ratios),
            f"{statistics.median(r[op]['run_seconds'] for r in rounds):.2f} s",
            f"bare {baseline} {statistics.median(r[bare]['seconds'] for r in rounds):.2f} s",
            f"median of {len(rounds)} rounds, {size}",
        )
    peak = max(max(r["backup"]["rss"], r["restore"]["rss"]) for r in rounds)
    goals.absolute("rss", peak, f"{peak:.0f} MB", f"at {args.objects:,} objects")
    raise SystemExit(goals.finish(args.goals_json))


if __name__ == "__main__":
    main()

"""MongoDB benchmark: davit's mongo.backup and mongo.restore against the bare pymongo ceilings.

Run: `.venv/bin/python bench/mongo.py [--docs N] [--uri URI] [--workdir DIR] [--repeat R] [--quick]
[--goals-json PATH]` (defaults: 200,000 documents of about 1 KB, the FerretDB test peer from the
peers' state file (`.peers/state.json` or DAVIT_PEERS_STATE), `./.bench/mongo`, 3 repetitions;
`--quick`: 2,000 documents, 1 repetition). Each measurement is taken R times, the ceiling and
davit alternating; the table compares the fastest of each (on a shared machine the other load
only ever slows a measurement down), the goal lines the median of the R paired ratios (issue 18).

Same server, same data, same run. The backup ceiling is a bare `find_raw_batches()` loop in
`_id` order writing to /dev/null; the restore ceiling is a bare unordered `insert_many` of
`RawBSONDocument` batches of about 1 MB read from the exported `.bson` file, then the build of
the snapshot's one secondary index, as a restore must and davit's whole run does (the goal
compares the two doing the same work; the inserts alone are timed apart and printed as
context, the table's ceiling). The pairs alternate which side goes first; with each figure
the CPU seconds of each side and of the server meanwhile are printed, figures the other load on
a shared machine barely moves (read from /proc when the server is local). mongodump and
mongorestore cannot be had on these machines (see README), so they are not compared. davit
runs as an operator runs it: `davitd --home H` as a subprocess, job files dropped into
`H/jobs.d/`; its time is taken from the run's own events (RunPreparing -> RunSucceeded, so
connecting, publishing and verifying count; the data steps alone are printed too. A restore
verifies by the server's acknowledgements recorded per chunk and an `_id` lookup of the last
document, not by counting the collection, a full scan on FerretDB; the benchmark counts the
copy itself afterwards, outside the timing) and its peak RSS is the daemon's VmHWM (start-up
included). Baselines run in a child process that reports its own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import Goals, LogReader, Spec, add_goal_arguments, cpu_count, load_note, table, ts, vm_hwm_mb

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# --quick (CI's smoke run) uses databases of its own, so that it never meets a full run's on the
# shared peer; `--db NAME` gives another full run databases of its own (two runs writing one
# database at once once crashed the shared FerretDB peer).
TAG = "_quick" if "--quick" in sys.argv else ""
DB = sys.argv[sys.argv.index("--db") + 1] if "--db" in sys.argv[:-1] else f"bench_mongo{TAG}"
COPY, BARE = f"{DB}_davit", f"{DB}_bare"
MB = 1e6

# Issue 18's goals (whole runs, median of the paired ratios: ceiling seconds / davit seconds) and
# the RSS ceiling every davitd keeps.
GOALS = {
    "backup": Spec("backup, whole run vs bare find_raw_batches loop", ">=", 0.9, "x", 18),
    "restore": Spec("restore, whole run vs bare insert_many loop + the same index", ">=", 0.9, "x", 18),
    "rss": Spec("peak RSS, every davitd", "<", 200, " MB", 9),
}

BARE_BACKUP = """
import json, os, resource, sys, time
from pymongo import MongoClient
c = MongoClient(sys.argv[1]); coll = c[sys.argv[2]]["items"]
t = time.monotonic(); c0 = sum(os.times()[:2]); n = 0
with open("/dev/null", "wb") as out:
    for batch in coll.find_raw_batches(sort=[("_id", 1)], batch_size=1000):
        out.write(batch); n += len(batch)
print(json.dumps({"seconds": time.monotonic() - t, "bytes": n, "cpu": sum(os.times()[:2]) - c0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BARE_RESTORE = """
import json, os, resource, sys, time
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
c = MongoClient(sys.argv[1]); c.drop_database(sys.argv[2]); coll = c[sys.argv[2]]["items"]
t = time.monotonic(); c0 = sum(os.times()[:2]); n = docs = 0
with open(sys.argv[3], "rb", buffering=1 << 20) as fh:
    batch, size = [], 0
    while head := fh.read(4):
        length = int.from_bytes(head, "little")
        batch.append(RawBSONDocument(head + fh.read(length - 4))); size += length
        if size >= 1 << 20:
            coll.insert_many(batch, ordered=False); docs += len(batch); n += size; batch, size = [], 0
    if batch:
        coll.insert_many(batch, ordered=False); docs += len(batch); n += size
seconds = time.monotonic() - t; cpu = sum(os.times()[:2]) - c0
t = time.monotonic(); coll.create_index("n", name="by_n")  # what mongorestore does next (not in the ceiling)
print(json.dumps({"seconds": seconds, "index_seconds": time.monotonic() - t, "bytes": n, "docs": docs, "cpu": cpu,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peer_uri() -> str:
    """The mongo peer's URI from the peers' state file (DAVIT_PEERS_STATE, as the tests read it)."""
    sys.path.insert(0, str(ROOT))
    from tests.peers.state import load

    entry = load().get("mongo", {})
    if not entry.get("ok"):
        sys.exit("the mongo peer is not up: python -m tests.peers up --only mongo")
    return str(entry["uri"])


def seed(uri: str, docs: int) -> int:
    from bson import ObjectId, encode
    from bson.raw_bson import RawBSONDocument
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(uri)
    coll = client[DB]["items"]
    if coll.estimated_document_count() == docs:
        return docs
    client.drop_database(DB)
    print(f"seeding {docs} documents of about 1 KB into {DB}.items ...", flush=True)
    batch = []
    for i in range(docs):
        batch.append(RawBSONDocument(encode({"_id": ObjectId(), "n": i, "name": f"item {i}", "pad": os.urandom(470).hex()})))
        if len(batch) == 2000:
            coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        coll.insert_many(batch, ordered=False)
    coll.create_index("n", name="by_n")
    return docs


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a live process has used (0 if it cannot be read): unlike wall
    seconds, a figure the other load on a shared machine barely moves."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(uri: str) -> int | None:
    """The local process serving `uri` (the FerretDB peer: `-listen-addr HOST:PORT`, or
    `--listen-addr=HOST:PORT`, in its command line), so that the work each side makes the server
    do is measured too; None if not local."""
    address = uri.split("@")[-1].split("//")[-1].split("/")[0]
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        shown = [a.decode(errors="replace") for a in argv[1:]]
        if proc.name.isdigit() and any(a == address or a.endswith("=" + address) for a in shown):
            return int(proc.name)
    return None


def child(script: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class Daemon:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.cpu = 0.0  # CPU seconds davitd used during its last `run`
        home.mkdir(parents=True, exist_ok=True)
        (home / "davit.toml").write_text("")
        log = open(home / "davitd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([str(VENV_BIN / "davitd"), "--home", str(home)], stdout=log, stderr=log)
        self.log = LogReader(home / "state" / "davit.db")
        deadline = time.monotonic() + 60
        while "ready" not in (home / "davitd.log").read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit(f"davitd did not start; see {home / 'davitd.log'}")
            time.sleep(0.1)

    def run(self, name: str, body: str) -> tuple[float, float, int]:
        """Drop a job file; the run's seconds (RunPreparing -> RunSucceeded), the seconds of its
        data steps (first StepStarted -> last StepCompleted of `dump:`/`restore:`) and bytes done."""
        start = self.log.head()
        cpu = cpu_seconds(self.proc.pid)
        jobs = self.home / "jobs.d"
        jobs.mkdir(exist_ok=True)
        (jobs / f"{name}.tmp").write_text(body)
        os.replace(jobs / f"{name}.tmp", jobs / f"{name}.toml")
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            done = [r for r in self.log.after(start) if r.type in ("RunSucceeded", "RunFailed")]
            if done:
                rows = self.log.stream(done[0].stream)
                if done[0].type == "RunFailed":
                    sys.exit(f"davit run {done[0].stream} failed: {done[0].data}")
                began = next(r for r in rows if r.type == "RunPreparing")
                nbytes = max((r.data.get("bytes_done", 0) for r in rows if r.type == "CheckpointRecorded"), default=0)
                data = [
                    r
                    for r in rows
                    if r.type in ("StepStarted", "StepCompleted")
                    and str(r.data.get("step", "")).startswith(("dump:", "restore:"))
                ]
                data_s = ts(data[-1].recorded_at) - ts(data[0].recorded_at)
                self.cpu = cpu_seconds(self.proc.pid) - cpu
                return ts(done[0].recorded_at) - ts(began.recorded_at), data_s, int(nbytes)
            time.sleep(0.2)
        sys.exit("timed out")

    def stop(self) -> float | None:
        rss = vm_hwm_mb(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(120)
        return rss


def baseline_seconds(result: dict[str, Any]) -> float:
    """A bare run's seconds as the goal compares them: a restore's include the build of the index
    davit's whole run builds too, so that both sides do the same work."""
    return float(result["seconds"]) + float(result.get("index_seconds", 0.0))


def alternate(repeat: int, bare: Callable[[int], None], davit: Callable[[int], None]) -> None:
    """`repeat` pairs, the side that goes first alternating, so that neither always meets the
    same moment (a cache the other left warm, a burst of the other load on the machine)."""
    for i in range(repeat):
        for side in (bare, davit) if i % 2 == 0 else (davit, bare):
            side(i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--uri", default=None, help="MongoDB-wire server (default: the FerretDB test peer)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "mongo")
    parser.add_argument("--repeat", type=int, default=3, help="measure each R times, alternating (default 3)")
    parser.add_argument("--db", default=DB, help="the source database; the copies are DB_davit and DB_bare (read above)")
    parser.add_argument("--writers", type=int, default=None, help="the restore job's `writers` (default: the job's default)")
    add_goal_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.docs, args.repeat = 2000, 1
    uri = args.uri or peer_uri()
    docs = seed(uri, args.docs)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "uri").write_text(uri)

    home = work / "home-backup"
    peer = server_pid(uri)
    # CPU seconds per measurement: the bare child's or davitd's own, and the server's meanwhile.
    cpu: dict[str, list[tuple[float, float]]] = {"bare backup": [], "davit backup": [], "bare restore": [], "davit restore": []}
    bare_backups, backups, backup_rss = [], [], []

    def bare_backup_once(_i: int) -> None:
        before = cpu_seconds(peer)
        bare_backups.append(child(BARE_BACKUP, uri, DB))
        cpu["bare backup"].append((bare_backups[-1]["cpu"], cpu_seconds(peer) - before))

    def davit_backup_once(i: int) -> None:
        daemon = Daemon(home)
        before = cpu_seconds(peer)
        backups.append(
            daemon.run(
                f"bench-backup-{i}",
                f'name = "bench-backup-{i}"\nkind = "mongo.backup"\n'
                f'[source]\nuri_file = "{work / "uri"}"\ndatabases = ["{DB}"]\n',
            )
        )
        cpu["davit backup"].append((daemon.cpu, cpu_seconds(peer) - before))
        backup_rss.append(daemon.stop())

    alternate(args.repeat, bare_backup_once, davit_backup_once)
    snapshots = subprocess.run(
        [str(VENV_BIN / "davit"), "--home", str(home), "snapshots", "--job", "bench-backup-0", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    snap = json.loads(snapshots.splitlines()[-1])["id"]
    subprocess.run(
        [str(VENV_BIN / "davit"), "--home", str(home), "export", "mongodump", snap, str(work / "dump")],
        check=True,
        capture_output=True,
    )

    bare_restores, restores, restore_rss = [], [], []
    writers = f"writers = {args.writers}\n" if args.writers else ""

    def bare_restore_once(_i: int) -> None:
        before = cpu_seconds(peer)
        bare_restores.append(child(BARE_RESTORE, uri, BARE, str(work / "dump" / DB / "items.bson")))
        cpu["bare restore"].append((bare_restores[-1]["cpu"], cpu_seconds(peer) - before))

    def davit_restore_once(i: int) -> None:
        daemon = Daemon(home)
        before = cpu_seconds(peer)
        restores.append(
            daemon.run(
                f"bench-restore-{i}",
                f'name = "bench-restore-{i}"\nkind = "mongo.restore"\n{writers}[source]\n'
                f'job = "bench-backup-0"\n[target]\nuri_file = "{work / "uri"}"\n'
                f'ns_from = ["{DB}.*"]\nns_to = ["{COPY}.*"]\ndrop = true\n',
            )
        )
        cpu["davit restore"].append((daemon.cpu, cpu_seconds(peer) - before))
        restore_rss.append(daemon.stop())

    alternate(args.repeat, bare_restore_once, davit_restore_once)
    bare_backup = min(bare_backups, key=lambda r: float(r["seconds"]))
    bare_restore = min(bare_restores, key=lambda r: float(r["seconds"]))
    backup_s, backup_data_s, backup_bytes = min(b[0] for b in backups), min(b[1] for b in backups), backups[0][2]
    restore_s, restore_data_s, restore_bytes = min(r[0] for r in restores), min(r[1] for r in restores), restores[0][2]
    print(
        "seconds of each repetition: bare backup "
        + " ".join(f"{r['seconds']:.1f}" for r in bare_backups)
        + "; davit backup "
        + " ".join(f"{b[0]:.1f}" for b in backups)
        + "; bare restore "
        + " ".join(f"{r['seconds']:.1f}" for r in bare_restores)
        + "; davit restore "
        + " ".join(f"{r[0]:.1f} (step {r[1]:.1f})" for r in restores)
    )
    print(
        "CPU seconds, median of the repetitions (client side / the server meanwhile"
        + ("" if peer else ", server not local: not measured")
        + "; the bare restore's leave its index build out): "
        + "; ".join(
            f"{label} {statistics.median(c for c, _ in runs):.1f} / {statistics.median(p for _, p in runs):.1f}"
            for label, runs in cpu.items()
        )
    )
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(uri)
    restored = client[COPY]["items"].count_documents({})
    client.drop_database(COPY)
    client.drop_database(BARE)
    if restored != docs:
        sys.exit(f"davit restored {restored} documents, expected {docs}")

    def row(label: str, seconds: float, nbytes: float, rss: float | None, ceiling: float) -> list[str]:
        return [
            label,
            f"{seconds:.1f}",
            f"{docs / seconds:,.0f}",
            f"{nbytes / MB / seconds:.1f}",
            f"{rss:.0f}" if rss else "?",
            f"{(docs / seconds) / ceiling:.2f}x",
        ]

    bb = docs / bare_backup["seconds"]
    br = docs / bare_restore["seconds"]
    rows = [
        row(
            "backup: bare find_raw_batches -> /dev/null", bare_backup["seconds"], bare_backup["bytes"], bare_backup["rss_mb"], bb
        ),
        row("backup: davit mongo.backup, whole run", backup_s, backup_bytes, max(r or 0 for r in backup_rss), bb),
        row("backup: davit, dump step only", backup_data_s, backup_bytes, max(r or 0 for r in backup_rss), bb),
        row(
            "restore: bare insert_many(RawBSONDocument)",
            bare_restore["seconds"],
            bare_restore["bytes"],
            bare_restore["rss_mb"],
            br,
        ),
        row(
            "restore: bare insert_many, then the same index (context)",
            bare_restore["seconds"] + bare_restore["index_seconds"],
            bare_restore["bytes"],
            bare_restore["rss_mb"],
            br,
        ),
        row("restore: davit mongo.restore, whole run", restore_s, restore_bytes, max(r or 0 for r in restore_rss), br),
        row("restore: davit, restore step only", restore_data_s, restore_bytes, max(r or 0 for r in restore_rss), br),
    ]
    print(
        table(
            ["operation", "seconds", "docs/s", "MB/s", "peak RSS MB", "vs ceiling"],
            rows,
            title=f"fastest of {args.repeat}: {docs:,} documents of about {bare_backup['bytes'] / docs:.0f} bytes, "
            f"server {uri.split('@')[-1]}; "
            f"{cpu_count()} CPUs, {load_note()}",
        )
    )
    with_index = bare_restore["seconds"] + bare_restore["index_seconds"]
    print(f"context: davit's whole restore run against the bare loop that also builds the index: {with_index / restore_s:.2f}x")
    goals = Goals("mongo", GOALS)
    inserts_only = [b["seconds"] / d[0] for b, d in zip(bare_restores, restores, strict=True)]
    print(f"context: the same, the bare inserts alone (no index): median ratio {statistics.median(inserts_only):.2f}x")
    for key, bare, davit in (("backup", bare_backups, backups), ("restore", bare_restores, restores)):
        seconds = [baseline_seconds(b) for b in bare]
        ratios = [b / d[0] for b, d in zip(seconds, davit, strict=True)]
        goals.ratio(
            key,
            statistics.median(ratios),
            f"{statistics.median(d[0] for d in davit):.2f} s",
            f"bare {statistics.median(seconds):.2f} s",
            f"median of {len(ratios)} paired runs ({' '.join(f'{r:.2f}' for r in ratios)}), {docs:,} docs",
        )
    peak = max(r or 0 for r in backup_rss + restore_rss)
    goals.absolute("rss", peak, f"{peak:.0f} MB")
    raise SystemExit(goals.finish(args.goals_json))


if __name__ == "__main__":
    main()

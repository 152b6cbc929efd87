"""Daemon benchmark: an idle davitd with 2,000 scheduled jobs, against the goals of issue 15.

Run: `.venv/bin/python bench/daemon.py [--jobs 2000] [--idle-seconds 30] [--base WORKTREE] [--quick]
[--goals-json PATH]` (`--quick`: 50 jobs, 2 s idle, 1 s of settling).

davit is run as an operator would: `davitd --home H` as a subprocess, then N `files.backup` job
files with `schedule = "0 3 * * *"` renamed one by one into `H/jobs.d/` while it runs. Figures:

- defining: seconds from the first rename to the `recorded_at` of the N-th `JobDefined` in
  `H/state/davit.db` (read-only), goal < 10 s;
- restart: seconds from a fresh daemon's `DaemonStarted` (same home, N files already there) to
  its "ready" line, for information;
- idle CPU: (utime + stime) of the daemon from `/proc/<pid>/stat` over `--idle-seconds` once
  everything is defined, as % of one core, goal < 2%;
- RSS: `VmRSS` at the end of the idle window, goal < 150 MB;
- stop: seconds from SIGTERM to the idle daemon's exit, for information (every test and bench
  that stops a davitd waits this long: the jobs-directory watcher's thread is waited for).

`--base WORKTREE` measures the same with `PYTHONPATH=WORKTREE` (another checkout of davit, e.g. the
commit before a change) and prints both side by side. On a shared machine other work moves every
figure, so the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from benchlib import Goals, LogReader, Spec, add_goal_arguments, cpu_count, disk_of, load_note, table, ts

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
# The goals of issue 15 (the number of jobs is --jobs: 2,000 unless told otherwise).
GOALS = {
    "define_s": Spec("define the dropped job files", "<", 10.0, " s", 15),
    "cpu_pct": Spec("idle CPU with every job scheduled", "<", 2.0, "% of a core", 15),
    "rss_mb": Spec("idle RSS with every job scheduled", "<", 150.0, " MB", 15),
}


@dataclass
class Figures:
    label: str
    define_s: float
    restart_s: float
    cpu_pct: float
    rss_mb: float
    stop_s: float


class Daemon:
    """`davitd --home H` with a chosen PYTHONPATH, stopped with SIGTERM."""

    def __init__(self, home: Path, label: str, pythonpath: Path) -> None:
        self.home = home
        self.log = LogReader(home / "state" / "davit.db")
        self.log_file = home / f"davitd-{label}.log"
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        # the checkout's own davitd: a base from before the `davit` package keeps `daemon` at its top
        module = "davit.daemon.davitd" if (pythonpath / "davit" / "daemon").is_dir() else "daemon.davitd"
        launch = f"import sys; sys.argv[0] = 'davitd'; from {module} import main; main()"
        with open(self.log_file, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", launch, "--home", str(home)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=pythonpath
            )
        self.wait(
            lambda: any(r.data.get("pid") == self.proc.pid for r in self.log.after(0, "DaemonStarted")), 60, "DaemonStarted"
        )
        self.started_at = next(
            ts(r.recorded_at) for r in self.log.after(0, "DaemonStarted") if r.data.get("pid") == self.proc.pid
        )

    def wait(self, predicate: object, timeout: float, what: str, poll: float = 0.05) -> None:
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                self.fail(f"davitd exited with code {self.proc.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                self.fail(f"no {what} within {timeout} s")
            time.sleep(poll)

    def ready(self) -> bool:
        return " ready: " in self.log_file.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def fail(self, why: str) -> NoReturn:
        tail = self.log_file.read_text(errors="replace")[-3000:]
        if self.proc.poll() is None:
            self.proc.kill()
        raise SystemExit(f"FAIL: {why}\n--- {self.log_file} (tail) ---\n{tail}")

    def stop(self) -> float:
        """SIGTERM; the seconds until the process exited."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            print("WARNING: davitd did not stop within 90 s of SIGTERM; killed it")
        return time.monotonic() - sent


def job_body(name: str, source: Path) -> str:
    return f'name = "{name}"\nkind = "files.backup"\nschedule = "0 3 * * *"\n\n[source]\npath = "{source}"\n'


def measure(label: str, pythonpath: Path, work: Path, jobs: int, idle_seconds: float, settle: float = 5) -> Figures:
    home = work / f"daemon-{label}"
    shutil.rmtree(home, ignore_errors=True)
    (home / "jobs.d").mkdir(parents=True)
    source = home / "source"
    source.mkdir()
    (home / "davit.toml").write_text("# bench/daemon.py: davit's defaults\n")
    print(f"[{label}] PYTHONPATH={pythonpath}: starting davitd, dropping {jobs} job files ...", flush=True)
    daemon = Daemon(home, "drop", pythonpath)
    daemon.wait(daemon.ready, 60, "ready line")
    jobs_dir = home / "jobs.d"
    first = time.time()
    for i in range(jobs):
        name = f"bench-{i:05d}"
        tmp = jobs_dir / f".{name}.tmp"
        tmp.write_text(job_body(name, source))
        os.rename(tmp, jobs_dir / f"{name}.toml")
    dropped = time.time() - first
    daemon.wait(lambda: len(daemon.log.after(0, "JobDefined")) >= jobs, 600, f"{jobs} JobDefined events", poll=0.5)
    define_s = max(ts(r.recorded_at) for r in daemon.log.after(0, "JobDefined")) - first
    print(f"[{label}] renames took {dropped:.2f} s; all {jobs} defined {define_s:.2f} s after the first", flush=True)
    daemon.stop()

    daemon = Daemon(home, "idle", pythonpath)
    daemon.wait(daemon.ready, 600, "ready line with the files already there")
    restart_s = time.time() - daemon.started_at
    time.sleep(settle)  # let start-up work (first scheduler pass, watcher set-up) settle
    cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
    time.sleep(idle_seconds)
    cpu1, t1 = daemon.cpu_seconds(), time.monotonic()
    rss = daemon.rss_mb()
    cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100
    print(
        f"[{label}] ready {restart_s:.2f} s after start; idle {cpu_pct:.2f}% of a core over {t1 - t0:.0f} s; RSS {rss:.0f} MB",
        flush=True,
    )
    stop_s = daemon.stop()
    print(f"[{label}] stopped {stop_s:.2f} s after SIGTERM", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    return Figures(label, define_s, restart_s, cpu_pct, rss, stop_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="number of scheduled job files (default 2000)")
    parser.add_argument("--idle-seconds", type=float, default=30, help="idle CPU window (default 30)")
    parser.add_argument("--workdir", type=Path, default=Path(".bench"), help="where the homes go")
    parser.add_argument("--base", type=Path, help="another davit worktree to measure the same way (PYTHONPATH)")
    add_goal_arguments(parser)
    args = parser.parse_args()
    settle = 5.0
    if args.quick:
        args.jobs, args.idle_seconds, settle = 50, 2.0, 1.0
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir on {disk_of(work)}; {cpu_count()} CPUs; {load_note()}")
    results = [measure("this", ROOT, work, args.jobs, args.idle_seconds, settle)]
    if args.base is not None:
        results.append(measure("base", args.base.resolve(), work, args.jobs, args.idle_seconds, settle))

    def verdict(key: str, value: float) -> str:
        return "ok" if GOALS[key].holds(value) else "MISSED"

    headers = ["figure", "goal", *(f"{r.label}" for r in results)]
    rows = [
        [
            f"define {args.jobs} dropped files (s)",
            GOALS["define_s"].text,
            *(f"{r.define_s:.2f} ({verdict('define_s', r.define_s)})" for r in results),
        ],
        [
            f"idle CPU over {args.idle_seconds:.0f} s (% of a core)",
            GOALS["cpu_pct"].text,
            *(f"{r.cpu_pct:.2f} ({verdict('cpu_pct', r.cpu_pct)})" for r in results),
        ],
        ["idle RSS (MB)", GOALS["rss_mb"].text, *(f"{r.rss_mb:.0f} ({verdict('rss_mb', r.rss_mb)})" for r in results)],
        ["restart to ready (s)", "-", *(f"{r.restart_s:.2f}" for r in results)],
        ["SIGTERM to exit, idle (s)", "-", *(f"{r.stop_s:.2f}" for r in results)],
    ]
    print()
    print(table(headers, rows, title=f"davitd with {args.jobs} scheduled jobs"))
    print(f"\nat the end: {load_note()}")
    this = results[0]
    goals = Goals("daemon", GOALS)
    goals.absolute("define_s", this.define_s, f"{this.define_s:.2f} s", f"{args.jobs} jobs")
    goals.absolute("cpu_pct", this.cpu_pct, f"{this.cpu_pct:.2f}%", f"over {args.idle_seconds:.0f} s, {args.jobs} jobs")
    goals.absolute("rss_mb", this.rss_mb, f"{this.rss_mb:.0f} MB", f"{args.jobs} jobs")
    raise SystemExit(goals.finish(args.goals_json))


if __name__ == "__main__":
    main()

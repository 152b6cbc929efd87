"""Remote repositories benchmark: davit and restic backing the same tree up to SFTP and S3 and restoring it.

Run: `PYTHONPATH=. .venv/bin/python bench/remote.py [--size-mb 400] [--runs 3] [--backends sftp,s3]
[--quick] [--goals-json PATH]`. `--quick`: an 8 MB tree and one round per backend, the counted one.

Both tools talk to the same servers in the same run, servers of the bench's own (so neither the
shared test peers' load nor their state moves a figure): a private sshd on loopback whose `sftp`
subsystem is OpenSSH's `sftp-server -l VERBOSE` logging every request to a file, and a private
SeaweedFS (`tests/peers/seaweedfs.py` `private_instance`, the binary the peers already built).
restic 0.14 (Debian) uses `-r sftp:...` with `-o sftp.command=ssh -i KEY ... -s sftp` and
`-r s3:http://127.0.0.1:PORT/BUCKET/PREFIX`; davit runs as an operator runs it, `davitd --home H`
with a `[repositories.bench]` section naming the `sftp://` or `s3://` URL (bench/files.py's
harness: a fresh daemon per operation, durations from the run's events, `VmHWM` as peak RSS).

Each of `--runs` rounds gives both tools a fresh repository on each backend (the order of the
two tools alternates from round to round) and times first backup, unchanged backup and restore;
the report shows medians. Then one more round per backend counts requests on the server side:
for SFTP from sftp-server's log (`opendir` per directory listed, `open`, `stat`, ...), for S3
through a counting pass-through (`s3count.py`) between the tool and SeaweedFS, per operation
and per top-level area (`index/`, `data/`, ...). Nothing is timed through that pass-through.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benchlib import Goals, LogReader, Row, Spec, add_goal_arguments, cpu_count, disk_of, load_note, table, ts
from files import (
    ROOT,
    Measure,
    RunTiming,
    cached_tree,
    check_total,
    compare_trees,
    davit_operations,
    ensure_tools,
    fresh_dir,
    timed,
    tree_stats,
    warm,
)
from s3count import Request, S3Counter, tally

sys.path.insert(0, str(ROOT))  # tests.peers: the private SeaweedFS and the free-port helpers

from tests.peers.ports import free_port, port_open
from tests.peers.seaweedfs import BUCKET, REGION, private_instance

MiB = 1 << 20
OPS = ("first backup", "unchanged backup", "restore")
TOOLS = ("restic", "davit")
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
BACKENDS = ("sftp", "s3")
QUICK_MB = 8

# The goals of issue 17, per backend: ratios are restic's median seconds / davit's (above 1:
# davit is faster); listings are the most LISTs (S3) or opendirs (SFTP) of one area by davit's
# unchanged backup, in the counted round.
GOALS = {
    **{
        f"{b}-{key}": Spec(f"{b} {what}", op, limit, unit, 17)
        for b in BACKENDS
        for key, what, op, limit, unit in (
            ("first", "first backup vs restic", ">=", 1.0, "x"),
            ("restore", "restore vs restic", ">=", 1.0, "x"),
            ("lists", "unchanged backup: listings of the most-listed area", "<=", 1, ""),
        )
    },
    "rss": Spec("peak RSS, every davitd", "<", 200, " MiB", 17),
}

Counts = Counter[tuple[str, str]]  # (operation, area) -> requests


class Server(Protocol):
    name: str

    def restic_repo(self, label: str, counted: bool) -> tuple[list[str], dict[str, str]]: ...
    def davit_section(self, label: str, counted: bool) -> str: ...
    def mark(self) -> int: ...
    def counts(self, mark: int, label: str) -> Counts: ...


# --- SFTP: a private sshd whose sftp-server logs every request ---------------------------------


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "davit-bench", "-f", str(path)], check=True)
    return path


class SftpServer:
    """sshd on 127.0.0.1 with its own host key; repositories are directories under `top/repos`."""

    name = "sftp"
    REQUEST = re.compile(r'^(\w[\w-]*)(?: name)?(?: old)? "([^"]*)"')

    def __init__(self, top: Path) -> None:
        self.top = fresh_dir(top)
        self.repos = self.top / "repos"
        self.repos.mkdir(mode=0o700)
        self.port = free_port()
        self.key = keygen(self.top / "id_client")
        host_key = keygen(self.top / "host_key")
        (self.top / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        self.known_hosts = self.top / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(Path(f'{host_key}.pub').read_text().split()[:2])}\n")
        self.log = self.top / "sftp-requests.log"
        self.log.touch()
        # the subsystem runs through root's shell: its stderr (the -e log) is appended to one file
        config = self.top / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {self.top}/sshd.pid\n"
            f"AuthorizedKeysFile {self.top}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"Subsystem sftp {SFTP_SERVER} -e -l VERBOSE 2>>{self.log}\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(self.top / "sshd.log")])
        deadline = time.monotonic() + 20
        while not port_open(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"FAIL: the bench's sshd did not start: {(self.top / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def repo_dir(self, label: str) -> Path:
        return self.repos / label

    def restic_repo(self, label: str, counted: bool) -> tuple[list[str], dict[str, str]]:
        ssh = (
            f"ssh -i {self.key} -p {self.port} -o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            "-o BatchMode=yes root@127.0.0.1 -s sftp"
        )
        return ["-r", f"sftp:root@127.0.0.1:{self.repo_dir(label)}", "-o", f"sftp.command={ssh}"], {}

    def davit_section(self, label: str, counted: bool) -> str:
        self.repo_dir(label).mkdir(mode=0o700)
        return (
            f'url = "sftp://root@127.0.0.1:{self.port}{self.repo_dir(label)}"\n'
            f'known_hosts = "{self.known_hosts}"\nidentity_file = "{self.key}"\n'
        )

    def mark(self) -> int:
        return self.log.stat().st_size

    def counts(self, mark: int, label: str) -> Counts:
        """Requests logged since `mark` on paths of repository `label`, per top-level area: `opendir`
        is the area's directory itself listed, `opendir-sub` one of its subdirectories."""
        root = f"{self.repo_dir(label)}/"
        out: Counts = Counter()
        with open(self.log, "rb") as fh:
            fh.seek(mark)
            for line in fh.read().decode(errors="replace").splitlines():
                m = self.REQUEST.match(line)
                if not m or m.group(1) in ("closedir", "close", "sent"):
                    continue
                op, path = m.group(1), m.group(2)
                if op == "open":
                    op = "open-write" if "WRITE" in line else "open-read"
                rest = (path + "/").removeprefix(root) if (path + "/").startswith(root) else None
                if rest is None:
                    out[(op, "(elsewhere)")] += 1
                    continue
                head, slash, sub = rest.partition("/")
                if op == "opendir" and sub.strip("/"):
                    op = "opendir-sub"  # a subdirectory of an area (data/ab/): part of listing that area
                out[(op, "(root)" if head == "" else head + slash)] += 1
        return out


# --- S3: a private SeaweedFS, and a counting pass-through for the counted round ----------------


class S3Server:
    """The private SeaweedFS: one bucket, one repository prefix per tool and round."""

    name = "s3"

    def __init__(self, top: Path, stack: ExitStack) -> None:
        self.top = fresh_dir(top)
        instance = stack.enter_context(
            private_instance(self.top / "weed", {"bench": ["Admin", "Read", "Write", "List", "Tagging"]})
        )
        self.port = instance.port
        self.access_key, self.secret_key = instance.keys["bench"]
        self.key_files = (self.top / "access_key_id", self.top / "secret_access_key")
        for path, text in zip(self.key_files, (self.access_key, self.secret_key), strict=True):
            path.write_text(text)
            path.chmod(0o600)
        self.counter = S3Counter(self.port)
        stack.callback(self.counter.close)

    def endpoint(self, counted: bool) -> str:
        return f"http://127.0.0.1:{self.counter.port if counted else self.port}"

    def restic_repo(self, label: str, counted: bool) -> tuple[list[str], dict[str, str]]:
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION}
        return ["-r", f"s3:{self.endpoint(counted)}/{BUCKET}/{label}"], env

    def davit_section(self, label: str, counted: bool) -> str:
        return (
            f'url = "s3://{BUCKET}/{label}"\nendpoint = "{self.endpoint(counted)}"\nregion = "{REGION}"\npath_style = true\n'
            f'access_key_id_file = "{self.key_files[0]}"\nsecret_access_key_file = "{self.key_files[1]}"\n'
        )

    def mark(self) -> int:
        return self.counter.mark()

    def counts(self, mark: int, label: str) -> Counts:
        return tally(self.counter.since(mark), BUCKET, label)


# --- the two tools -----------------------------------------------------------------------------


@dataclass
class Result:
    seconds: dict[str, float]
    rss_mb: dict[str, float | None]
    counts: dict[str, Counts] = field(default_factory=dict)
    # davit over S3, counted round: the unchanged backup's listings by phase of its run
    phases: list[tuple[str, Counts]] = field(default_factory=list)


class OpCounter:
    """Splits a server's request record by operation: `before(op)` closes the previous one."""

    def __init__(self, server: Server, label: str, counted: bool) -> None:
        self.server, self.label, self.counted = server, label, counted
        self.current: tuple[str, int] | None = None
        self.counts: dict[str, Counts] = {}

    def before(self, op: str) -> None:
        self.end()
        self.current = (op, self.server.mark())

    def end(self) -> None:
        if self.current is not None and self.counted:
            op, mark = self.current
            self.counts[op] = self.server.counts(mark, self.label)
        self.current = None


def run_restic(server: Server, tree: Path, work: Path, label: str, counted: bool) -> Result:
    repo, env = server.restic_repo(label, counted)
    env |= {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(fresh_dir(work / f"restic-cache-{label}"))}
    flags = " ".join(shlex.quote(a) for a in repo)
    init = subprocess.run(
        ["restic", *repo, "init", "--repository-version", "2"], env={**os.environ, **env}, capture_output=True, text=True
    )
    if init.returncode != 0:
        raise RuntimeError(f"restic init on {server.name} failed: {init.stderr.strip()[-1500:]}")
    ops = OpCounter(server, label, counted)
    cmd = f"restic {flags} backup -q --compression auto ."
    out: dict[str, Measure] = {}
    for op in ("first backup", "unchanged backup"):
        warm(tree)
        ops.before(op)
        out[op] = timed(cmd, tree, env)
    target = fresh_dir(work / f"restore-restic-{server.name}")
    ops.before("restore")
    out["restore"] = timed(f"restic {flags} restore -q latest --target {shlex.quote(str(target))}", work, env)
    ops.end()
    check_total(target, tree, f"restic over {server.name}")
    shutil.rmtree(work / f"restic-cache-{label}")
    return Result({k: m.seconds for k, m in out.items()}, {k: m.rss_mb for k, m in out.items()}, ops.counts)


def run_davit(
    server: Server, tree: Path, work: Path, label: str, counted: bool, passphrase: bool, data_path: list[str]
) -> Result:
    home = fresh_dir(work / f"davit-home-{server.name}")
    secret = ""
    if passphrase:
        (home / "passphrase").write_text("bench")
        secret = f'passphrase_file = "{home / "passphrase"}"\n'
    tuning = "".join(f"{line}\n" for line in data_path)
    (home / "davit.toml").write_text(
        f"# bench/remote.py: davit's defaults, one {server.name} repository\n"
        f"[repositories.bench]\n{server.davit_section(label, counted)}{secret}" + (f"\n[data_path]\n{tuning}" if tuning else "")
    )
    ops = OpCounter(server, label, counted)
    target = work / f"restore-davit-{server.name}"
    marks: dict[str, int] = {}

    def before(op: str) -> None:
        ops.before(op)
        marks[op] = server.mark()

    timings: dict[str, RunTiming] = davit_operations(tree, home, target, "bench", before)
    ops.end()
    phases = []
    if counted and isinstance(server, S3Server):
        run = LogReader(home / "state" / "davit.db").stream(f"run-{timings['unchanged backup'].run_id}")
        requests = server.counter.since(marks["unchanged backup"])[: marks["restore"] - marks["unchanged backup"]]
        phases = by_phase(run, requests, label)
    problems = compare_trees(tree, target)
    if problems:
        print(f"\nFAIL: davit's restore from {server.name} differs from the source in {len(problems)} places:")
        print("\n".join(f"  {p}" for p in problems[:30]))
        raise SystemExit(1)
    shutil.rmtree(target)
    shutil.rmtree(home)
    return Result({k: t.wall for k, t in timings.items()}, {k: t.rss_mb for k, t in timings.items()}, ops.counts, phases)


def by_phase(run: list[Row], requests: list[Request], label: str) -> list[tuple[str, Counts]]:
    """`requests` (the run's, and the daemon's around it) split by the phases of the run its
    events draw: before it was queued, queued to the first step, each step, after the last."""
    bounds: list[tuple[float, str]] = []  # (start, phase)
    for event in run:
        if event.type == "RunQueued":
            bounds.append((ts(event.recorded_at), "prepare"))
        elif event.type == "StepStarted":
            bounds.append((ts(event.recorded_at), f"step {event.data['step']}"))
        elif event.type == "StepCompleted":
            bounds.append((ts(event.recorded_at), "verify and end"))
        elif event.type == "RunSucceeded":
            bounds.append((ts(event.recorded_at), "after the run"))
    out: dict[str, Counts] = {}
    for r in requests:
        phase = "before the run"
        for start, name in bounds:
            if r.at >= start:
                phase = name
        out.setdefault(phase, Counter()).update(tally([r], BUCKET, label))
    return list(out.items())


# --- the report --------------------------------------------------------------------------------


@dataclass
class Series:
    """Every round's figures of one tool on one backend."""

    results: list[Result] = field(default_factory=list)
    counted: Result | None = None

    def median(self, op: str) -> float:
        return statistics.median(r.seconds[op] for r in self.results)

    def spread(self, op: str) -> str:
        values = sorted(r.seconds[op] for r in self.results)
        return f"{values[0]:.2f}-{values[-1]:.2f}"

    def peak_rss(self, op: str) -> float | None:
        values = [v for r in self.results if (v := r.rss_mb[op]) is not None]
        return max(values) if values else None


def versus_restic(series: dict[str, Series], op: str) -> float | None:
    """restic's median / davit's: above 1 means davit is faster; None unless both ran."""
    if "restic" not in series or "davit" not in series:
        return None
    return series["restic"].median(op) / series["davit"].median(op)


def print_times(backend: str, series: dict[str, Series], tree_bytes: int) -> None:
    mb = tree_bytes / MiB
    rows = []
    for op in OPS:
        for tool, s in series.items():
            median = s.median(op)
            rss = s.peak_rss(op)
            ratio = versus_restic(series, op)
            rows.append(
                [
                    op if tool == next(iter(series)) else "",
                    tool,
                    f"{median:.2f}",
                    s.spread(op),
                    f"{mb / median:.0f}",
                    f"{rss:.0f}" if rss is not None else "-",
                    f"{ratio:.2f}x" if tool == "davit" and ratio is not None else "",
                ]
            )
    runs = len(next(iter(series.values())).results)
    print(
        table(
            ["operation", "tool", "median s", "min-max s", "MiB/s", "peak RSS MiB", "restic s / davit s"],
            rows,
            f"\n{backend}: medians of {runs} rounds on {mb:.0f} MiB; ratio > 1 means davit is faster",
        )
    )


def describe(counts: Counts, op: str) -> str:
    areas = sorted((area, n) for (o, area), n in counts.items() if o == op)
    return ", ".join(f"{area} {n}" for area, n in areas) or "none"


def print_counts(backend: str, series: dict[str, Series]) -> None:
    listing = "opendir" if backend == "sftp" else "LIST"
    rows = []
    for op in OPS:
        for tool in series:
            counted = series[tool].counted
            if counted is None or op not in counted.counts:
                continue
            c = counted.counts[op]
            others = Counter[str]()
            for (o, _area), n in c.items():
                if o != listing:
                    others[o] += n
            rows.append(
                [
                    op if tool == next(iter(series)) else "",
                    tool,
                    describe(c, listing),
                    str(sum(c.values())),
                    ", ".join(f"{o} {n}" for o, n in sorted(others.items())),
                ]
            )
    how = (
        "sftp-server's log: one opendir per directory read"
        if backend == "sftp"
        else "counted on the wire between the tool and SeaweedFS: one LIST per page of up to 1000 keys"
    )
    headers = ["operation", "tool", f"{listing} per area", "requests", "other requests"]
    print(table(headers, rows, f"\n{backend}: requests ({how})"))
    counted = series["davit"].counted if "davit" in series else None
    if counted is not None and counted.phases:
        print("davit's unchanged backup, LISTs by phase of its run (request times against the run's events):")
        for phase, c in counted.phases:
            print(f"  {phase}: {describe(c, 'LIST')} (requests: {sum(c.values())})")


def unchanged_lists(backend: str, series: dict[str, Series]) -> int | None:
    """The most listings of one area by davit's unchanged backup (SFTP: opendir of the area
    itself, not of its subdirectories), or None if it was not counted."""
    counted = series["davit"].counted if "davit" in series else None
    if counted is None or "unchanged backup" not in counted.counts:
        return None
    listing = "opendir" if backend == "sftp" else "LIST"
    per_area = [n for (o, _area), n in counted.counts["unchanged backup"].items() if o == listing]
    return max(per_area, default=0)


def goals_of(all_series: dict[str, dict[str, Series]]) -> Goals:
    goals = Goals("remote", GOALS)
    peak: float | None = None
    for backend in BACKENDS:
        series = all_series.get(backend)
        if series is None:
            for key in ("first", "restore", "lists"):
                goals.skipped(f"{backend}-{key}", "not asked for (--backends)")
            continue
        for key, op in (("first", "first backup"), ("restore", "restore")):
            r = versus_restic(series, op)
            if r is None:
                goals.skipped(f"{backend}-{key}", "restic and davit did not both run (--tools)")
                continue
            davit, restic = series["davit"].median(op), series["restic"].median(op)
            rounds = len(series["davit"].results)
            goals.ratio(f"{backend}-{key}", r, f"{davit:.2f} s", f"restic {restic:.2f} s", f"medians of {rounds} rounds")
        lists = unchanged_lists(backend, series)
        if lists is None:
            goals.skipped(f"{backend}-lists", "davit's requests were not counted")
        else:
            goals.absolute(f"{backend}-lists", lists, f"{lists} per area")
        if "davit" in series:
            peak = max([peak or 0.0, *(series["davit"].peak_rss(op) or 0.0 for op in OPS)])
    if peak is None:
        goals.skipped("rss", "davit did not run")
    else:
        goals.absolute("rss", peak, f"{peak:.0f} MiB")
    return goals


# --- main --------------------------------------------------------------------------------------


@contextmanager
def servers(work: Path, wanted: list[str]) -> Iterator[dict[str, Server]]:
    with ExitStack() as stack:
        out: dict[str, Server] = {}
        for name in wanted:
            print(f"starting the bench's own {name} server ...", flush=True)
            if name == "sftp":
                sftp = SftpServer(work / "sftp")
                stack.callback(sftp.close)
                out[name] = sftp
            else:
                out[name] = S3Server(work / "s3", stack)
        yield out


def measure(server: Server, tree: Path, work: Path, args: argparse.Namespace) -> dict[str, Series]:
    runs, tools = args.runs, tuple(args.tools.split(","))
    series = {tool: Series() for tool in tools}
    runners: dict[str, Callable[[str, bool], Result]] = {
        "restic": lambda label, counted: run_restic(server, tree, work, label, counted),
        "davit": lambda label, counted: run_davit(server, tree, work, label, counted, args.encrypted, args.data_path),
    }
    if args.quick:  # one round per tool, the counted one, its times printed too (meaningless at this size)
        for tool in tools:
            print(f"{server.name} (--quick, one counted round): {tool} ... ({load_note()})", flush=True)
            series[tool].counted = runners[tool](f"count-{tool}", True)
            series[tool].results.append(series[tool].counted)
        return series
    for i in range(runs):
        order = tools if i % 2 == 0 else tools[::-1]
        for tool in order:
            print(f"{server.name} round {i + 1}/{runs}: {tool} ... ({load_note()})", flush=True)
            series[tool].results.append(runners[tool](f"r{i}-{tool}", False))
            print("  " + ", ".join(f"{op} {s:.2f}s" for op, s in series[tool].results[-1].seconds.items()), flush=True)
    for tool in tools:
        print(f"{server.name}: counting {tool}'s requests (one more round, not timed) ...", flush=True)
        series[tool].counted = runners[tool](f"count-{tool}", True)
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400, help="size of the generated tree (default 400)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds per backend (default 3)")
    parser.add_argument("--backends", default="sftp,s3", help="comma-separated: sftp, s3 (default both)")
    parser.add_argument("--workdir", type=Path, default=Path(".bench"), help="where the tree, servers and restores go")
    parser.add_argument("--tools", default="restic,davit", help="comma-separated: restic, davit (default both)")
    parser.add_argument("--encrypted", action="store_true", help="davit's repository gets a passphrase (restic always encrypts)")
    parser.add_argument(
        "--data-path",
        action="append",
        default=[],
        metavar="'KEY = VALUE'",
        help="a line for davit.toml's [data_path] (repeatable), e.g. 'workers = 8', to try a tuning",
    )
    add_goal_arguments(parser)
    args = parser.parse_args()
    work: Path = args.workdir.resolve()
    tree = cached_tree(work, QUICK_MB if args.quick else args.size_mb)
    files, total = tree_stats(tree)
    print(f"tree: {tree} ({files} files, {total / MiB:.0f} MiB); workdir on {disk_of(work)}; {cpu_count()} CPUs; {load_note()}")
    reasons = ensure_tools()
    if "restic" in reasons or "/usr/bin/time" in reasons:
        raise SystemExit(f"FAIL: {reasons.get('restic') or reasons['/usr/bin/time']}")
    print(f"davit's repositories are {'encrypted' if args.encrypted else 'not encrypted'}; restic's always are", flush=True)
    if args.data_path:
        print(f"davit's [data_path]: {'; '.join(args.data_path)}", flush=True)
    remote = fresh_dir(work / "remote")
    all_series: dict[str, dict[str, Series]] = {}
    with servers(remote, args.backends.split(",")) as by_name:
        for name, server in by_name.items():
            all_series[name] = measure(server, tree, remote, args)
    for name, series in all_series.items():
        print_times(name, series, total)
        print_counts(name, series)
    print(f"\nat the end: {load_note()}")
    shutil.rmtree(remote, ignore_errors=True)
    raise SystemExit(goals_of(all_series).finish(args.goals_json))


if __name__ == "__main__":
    main()

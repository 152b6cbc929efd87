"""SQL benchmark: davit's postgres.* and mysql.* kinds against the servers' own dump tools.

Run: `.venv/bin/python bench/sql.py [--only pg,my] [--rounds R] [--pg-scale S] [--my-tables T]
[--my-rows N] [--workdir DIR] [--quick] [--goals-json PATH]` (defaults: both engines, 3 rounds,
`pgbench -i -s 70` (~1 GB), 8 sysbench-like tables of 600,000 rows (~1 GB of SQL), the
PostgreSQL and MariaDB test peers from the peers' state file (`.peers/state.json` or
DAVIT_PEERS_STATE), `./.bench/sql`; `--quick`: a tiny database, 1 round).

Same server, same data, same run, paired rounds (the bare tool and davit alternate which goes
first): backup `pg_dump -Fd -j2` against `postgres.backup` (parallel 2), restore `pg_restore
-j2` (after dropping and creating the database) against `postgres.restore` (if_exists = drop,
parallel 2); backup `mariadb-dump --single-transaction DB | zstd` against `mysql.backup`,
restore `DROP/CREATE DATABASE; zstd -d | mariadb DB` against `mysql.restore`. The goal lines
take the median of the rounds' ratios (bare seconds / davit seconds); every figure is printed
with the 1-minute load average at its end. davit runs as an operator runs it: one `davitd
--home H` per engine as a subprocess (this checkout first on PYTHONPATH, so it runs this code),
job files dropped into `H/jobs.d/`; a run's time is taken from its own events (RunPreparing ->
RunSucceeded: connecting, publishing and verifying count). Each round backs up into a fresh
repository (a daemon home of its own: the ratio is that of a first backup, the dearest); the
last round then backs the unchanged database up again into the same repository: what that adds
(bytes on disk: packs, indexes, trees, manifest) against what the first backup stored is the
"new data" figure. Peak RSS is each daemon's VmHWM. The bare tools get the password through
PGPASSFILE / `--defaults-extra-file`, files 0600 in a private temporary directory (never argv);
davit through the jobs' `password_file`.
The generated databases are kept between runs (regenerated when their size differs).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import Goals, LogReader, Spec, add_goal_arguments, cpu_count, load_note, table, ts, vm_hwm_mb

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# --quick (CI's smoke run) uses databases of its own, so that it never meets a full run's on the shared peers.
TAG = "_quick" if "--quick" in sys.argv else ""
DB = f"bench_sql{TAG}"
DAVIT_COPY, BARE_COPY = f"{DB}_davit", f"{DB}_bare"
MB = 1e6

GOALS = {
    "pg_backup": Spec("postgres.backup, whole run vs pg_dump -Fd -j2", ">=", 0.9, "x", 19),
    "pg_restore": Spec("postgres.restore, whole run vs pg_restore -j2", ">=", 0.9, "x", 19),
    "pg_again": Spec("postgres.backup of an unchanged database, new data stored", "<", 5, "%", 19),
    "my_backup": Spec("mysql.backup, whole run vs mariadb-dump --single-transaction | zstd", ">=", 0.9, "x", 19),
    "my_restore": Spec("mysql.restore, whole run vs zstd -d | mariadb", ">=", 0.9, "x", 19),
    "my_again": Spec("mysql.backup of an unchanged database, new data stored", "<", 5, "%", 19),
    "rss": Spec("peak RSS, every davitd", "<", 200, " MB", 19),
}


def peers() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.peers.state import load

    return load()


@dataclass
class Timed:
    seconds: float
    load: float
    client_cpu: float = 0.0  # CPU seconds of the bare tools' processes, or of davitd
    server_cpu: float = 0.0  # CPU seconds of the database server (its processes, exited ones included)


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU of a process (and of its reaped children: PostgreSQL's exited backends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str] | str, env: dict[str, str], server_pid: int, shell: bool = False) -> Timed:
    start, cpu, server = time.monotonic(), children_cpu(), cpu_seconds(server_pid)
    proc = subprocess.run(argv, env=env, shell=shell, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"FAIL: {argv if isinstance(argv, str) else ' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return Timed(seconds, os.getloadavg()[0], children_cpu() - cpu, cpu_seconds(server_pid) - server)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Daemon:
    """`davitd --home H` as a subprocess, for all the runs of one engine."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / "davit.toml").write_text("")
        self.log_path = home / "davitd.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(VENV_BIN / "davitd"), "--home", str(home)], stdout=log, stderr=log)
        self.log = LogReader(home / "state" / "davit.db")
        deadline = time.monotonic() + 60
        while not any(r.data.get("pid") == self.proc.pid for r in self.log.after(0, "DaemonStarted")):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit(f"FAIL: davitd did not start; see {self.log_path}")
            time.sleep(0.1)

    def run(self, name: str, body: str, server_pid: int = 0) -> tuple[Timed, dict[str, Any]]:
        """Drop a job file; the run's seconds (RunPreparing -> RunSucceeded), CPU and result."""
        start = self.log.head()
        cpu, server = cpu_seconds(self.proc.pid, children=False), cpu_seconds(server_pid)
        jobs = self.home / "jobs.d"
        jobs.mkdir(exist_ok=True)
        (jobs / f"{name}.tmp").write_text(f'name = "{name}"\n{body}')
        os.replace(jobs / f"{name}.tmp", jobs / f"{name}.toml")
        deadline = time.monotonic() + 4 * 3600
        while time.monotonic() < deadline:
            done = [r for r in self.log.after(start) if r.type in ("RunSucceeded", "RunFailed")]
            if done:
                if done[0].type == "RunFailed":
                    sys.exit(f"FAIL: davit run {name} failed: {done[0].data}\n(log: {self.log_path})")
                began = next(r for r in self.log.stream(done[0].stream) if r.type == "RunPreparing")
                seconds = ts(done[0].recorded_at) - ts(began.recorded_at)
                used = cpu_seconds(self.proc.pid, children=False) - cpu, cpu_seconds(server_pid) - server
                return Timed(seconds, os.getloadavg()[0], *used), done[0].data
            if self.proc.poll() is not None:
                sys.exit(f"FAIL: davitd exited {self.proc.returncode}; see {self.log_path}")
            time.sleep(0.2)
        sys.exit(f"FAIL: davit run {name} timed out")

    def seconds(self, name: str, body: str, server_pid: int) -> Timed:
        return self.run(name, body, server_pid)[0]

    def stop(self) -> float | None:
        rss = vm_hwm_mb(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(120)
        return rss


@dataclass
class Engine:
    """One engine's figures: per round, the bare tool's and davit's backup and restore."""

    key: str
    label: str
    bare_backup: list[Timed]
    davit_backup: list[Timed]
    bare_restore: list[Timed]
    davit_restore: list[Timed]
    again: list[float]  # share of new data of each unchanged davit backup, in %
    rss: float | None
    size_mb: float


# --- PostgreSQL ------------------------------------------------------------------------------


class Postgres:
    def __init__(self, entry: dict[str, Any], private: Path) -> None:
        self.entry = entry
        self.password = Path(entry["password_file"]).read_text().strip()
        passfile = private / "pgpass"
        passfile.touch(mode=0o600)
        passfile.write_text(f"{entry['host']}:{entry['port']}:*:{entry['user']}:{self.password}\n")
        self.env = {
            **os.environ,
            "PGPASSFILE": str(passfile),
            "PGHOST": str(entry["host"]),
            "PGPORT": str(entry["port"]),
            "PGUSER": str(entry["user"]),
        }

    @property
    def pid(self) -> int:
        """The postmaster's: its children's CPU (backends, exited) is counted in its own."""
        with self.connect() as conn:
            data = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        return int((Path(data) / "postmaster.pid").read_text().split()[0])

    def connect(self, db: str = "postgres") -> Any:
        import psycopg

        e = self.entry
        return psycopg.connect(host=e["host"], port=e["port"], user=e["user"], password=self.password, dbname=db, autocommit=True)

    def seed(self, scale: int) -> float:
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if exists:
            with self.connect(DB) as conn:
                try:
                    rows = conn.execute("SELECT count(*) FROM pgbench_accounts").fetchone()[0]  # type: ignore[index]
                except Exception:
                    rows = -1
        if not exists or rows != scale * 100_000:
            print(f"generating {DB}: pgbench -i -s {scale} ...", flush=True)
            subprocess.run(["dropdb", "--if-exists", DB], env=self.env, check=True)
            subprocess.run(["createdb", DB], env=self.env, check=True)
            subprocess.run(["pgbench", "-i", "-q", "-I", "dtGvp", "-s", str(scale), DB], env=self.env, check=True)
        with self.connect(DB) as conn:
            return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]) / MB  # type: ignore[index]

    def counts(self, db: str) -> dict[str, int]:
        with self.connect(db) as conn:
            names = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
            return {n: int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}  # type: ignore[index]

    def job_source(self) -> str:
        e = self.entry
        return f'host = "{e["host"]}"\nport = {e["port"]}\nuser = "{e["user"]}"\npassword_file = "{e["password_file"]}"\n'

    def bare_backup(self, out: Path) -> Timed:
        shutil.rmtree(out, ignore_errors=True)
        return timed(["pg_dump", "-Fd", "-j2", "-f", str(out), DB], self.env, self.pid)

    def bare_restore(self, dump: Path) -> Timed:
        script = f"dropdb --if-exists {BARE_COPY} && createdb {BARE_COPY} && pg_restore -j2 -d {BARE_COPY} {dump}"
        return timed(script, self.env, self.pid, shell=True)

    def backup_job(self) -> str:
        return f'kind = "postgres.backup"\nparallel = 2\n[source]\n{self.job_source()}databases = ["{DB}"]\n'

    def restore_job(self, backup: str) -> str:
        return (
            f'kind = "postgres.restore"\nparallel = 2\n[source]\njob = "{backup}"\n[target]\n{self.job_source()}'
            f'rename = {{ "{DB}" = "{DAVIT_COPY}" }}\nif_exists = "drop"\n'
        )

    def drop_copies(self) -> None:
        for db in (DAVIT_COPY, BARE_COPY):
            subprocess.run(["dropdb", "--if-exists", db], env=self.env, check=True)


# --- MariaDB ---------------------------------------------------------------------------------

SBTEST = """CREATE TABLE sbtest{n} (
  id INT NOT NULL AUTO_INCREMENT, k INT NOT NULL DEFAULT 0,
  c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '',
  PRIMARY KEY (id), KEY k_{n} (k)) ENGINE=InnoDB"""
# sysbench's rows, generated by the server: c is 11-digit groups joined by '-' (119 characters), pad 5 groups.
SBFILL = """INSERT INTO sbtest{n} (id, k, c, pad)
SELECT seq, FLOOR(1 + RAND({n} * 1000003 + seq) * {rows}),
  CONCAT_WS('-', {c_groups}), CONCAT_WS('-', {pad_groups})
FROM seq_1_to_{rows}"""


def _groups(count: int, salt: int) -> str:
    return ", ".join(f"LPAD(FLOOR(RAND(seq * {97 + i} + {salt}) * 99999999999), 11, '0')" for i in range(count))


class Mariadb:
    def __init__(self, entry: dict[str, Any], private: Path) -> None:
        self.entry = entry
        self.password = Path(entry["password_file"]).read_text().strip()
        self.cnf = private / "my.cnf"
        self.cnf.touch(mode=0o600)
        self.cnf.write_text(
            f"[client]\nhost={entry['host']}\nport={entry['port']}\nuser={entry['user']}\npassword={self.password}\n"
        )
        self.env = dict(os.environ)

    @property
    def pid(self) -> int:
        return int(Path(self.sql("SELECT @@pid_file")[0][0]).read_text().split()[0])

    def connect(self, db: str | None = None) -> Any:
        import pymysql

        e = self.entry
        return pymysql.connect(
            host=e["host"], port=e["port"], user=e["user"], password=self.password, database=db, autocommit=True
        )

    def sql(self, *statements: str, db: str | None = None) -> list[Any]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                rows: list[Any] = []
                for s in statements:
                    cur.execute(s)
                    rows = list(cur.fetchall())
                return rows
        finally:
            conn.close()

    def seed(self, tables: int, rows: int) -> float:
        present = self.sql(f"SELECT table_name, table_rows FROM information_schema.tables WHERE table_schema = '{DB}' ORDER BY 1")
        wanted = {f"sbtest{n}" for n in range(1, tables + 1)}
        fine = {str(r[0]) for r in present} == wanted and all(
            self.sql(f"SELECT COALESCE(MAX(id), 0), COUNT(*) FROM sbtest{n}", db=DB)[0] == (rows, rows)
            for n in range(1, tables + 1)
        )
        if not fine:
            print(f"generating {DB}: {tables} sysbench-like tables of {rows:,} rows ...", flush=True)
            self.sql(f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}")
            for n in range(1, tables + 1):
                fill = SBFILL.format(n=n, rows=rows, c_groups=_groups(10, n), pad_groups=_groups(5, n + 7))
                self.sql(SBTEST.format(n=n), fill, f"ANALYZE TABLE sbtest{n}", db=DB)
        size = self.sql(f"SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = '{DB}'")[0][
            0
        ]
        return int(size or 0) / MB

    def counts(self, db: str) -> dict[str, int]:
        names = [r[0] for r in self.sql(f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}'")]
        return {str(n): int(self.sql(f"SELECT COUNT(*) FROM `{n}`", db=db)[0][0]) for n in sorted(names)}

    def job_source(self) -> str:
        e = self.entry
        return f'host = "{e["host"]}"\nport = {e["port"]}\nuser = "{e["user"]}"\npassword_file = "{e["password_file"]}"\n'

    def bare_backup(self, out: Path) -> Timed:
        script = f"set -o pipefail; mariadb-dump --defaults-extra-file={self.cnf} --single-transaction {DB} | zstd -q -f -o {out}"
        return timed(["bash", "-c", script], self.env, self.pid)

    def bare_restore(self, dump: Path) -> Timed:
        cnf = f"--defaults-extra-file={self.cnf}"
        script = (
            f"set -o pipefail; mariadb {cnf} -e 'DROP DATABASE IF EXISTS {BARE_COPY}; CREATE DATABASE {BARE_COPY}' && "
            f"zstd -d -q -c {dump} | mariadb {cnf} {BARE_COPY}"
        )
        return timed(["bash", "-c", script], self.env, self.pid)

    def backup_job(self) -> str:
        return f'kind = "mysql.backup"\nparallel = 2\n[source]\n{self.job_source()}databases = ["{DB}"]\n'

    def restore_job(self, backup: str) -> str:
        return (
            f'kind = "mysql.restore"\nparallel = 2\n[source]\njob = "{backup}"\n[target]\n{self.job_source()}'
            f'rename = {{ "{DB}" = "{DAVIT_COPY}" }}\nif_exists = "drop"\n'
        )

    def drop_copies(self) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {DAVIT_COPY}", f"DROP DATABASE IF EXISTS {BARE_COPY}")


# --- the rounds ------------------------------------------------------------------------------


def paired(first_bare: bool, bare: Any, davit: Any) -> tuple[Timed, Timed]:
    """Run the bare tool and davit one after the other, in the given order; both timings."""
    if first_bare:
        b = bare()
        return b, davit()
    d = davit()
    return bare(), d


def measure(key: str, label: str, server: Postgres | Mariadb, size_mb: float, rounds: int, work: Path) -> Engine:
    """Each round: a fresh repository (a daemon home of its own), the bare backup and davit's
    backup in alternating order, then the restores likewise; the last round also backs the
    unchanged database up again into the same repository (the new-data figure)."""
    dump = work / (f"{key}-dump" if key == "pg" else f"{key}-dump.sql.zst")
    bare_b, davit_b, bare_r, davit_r, again = [], [], [], [], []
    rss: list[float] = []
    pid = server.pid
    for i in range(rounds):
        home = work / f"home-{key}-{i}"
        shutil.rmtree(work / f"home-{key}-{i - 1}", ignore_errors=True)
        daemon = Daemon(home)
        backup = f"bench-{key}-backup-{i}"
        try:
            b, d = paired(i % 2 == 0, lambda: server.bare_backup(dump), partial(daemon.seconds, backup, server.backup_job(), pid))
            bare_b.append(b)
            davit_b.append(d)
            stored = du(home / "repository")
            line = f"  {key} round {i + 1}: backup bare {b.seconds:.1f} s, davit {d.seconds:.1f} s (stored {stored / MB:.1f} MB)"
            if i == rounds - 1:
                again_run, _ = daemon.run(f"{backup}-again", server.backup_job())
                added = du(home / "repository") - stored
                again.append(100 * added / max(stored, 1))
                line += f", unchanged again {again_run.seconds:.1f} s (added {added / MB:.2f} MB)"
            b, d = paired(
                i % 2 == 1,
                lambda: server.bare_restore(dump),
                partial(daemon.seconds, f"bench-{key}-restore-{i}", server.restore_job(backup), pid),
            )
            bare_r.append(b)
            davit_r.append(d)
            print(f"{line}; restore bare {b.seconds:.1f} s, davit {d.seconds:.1f} s; load {d.load:.1f}", flush=True)
        finally:
            rss.append(daemon.stop() or 0)
    source, copy, bare = server.counts(DB), server.counts(DAVIT_COPY), server.counts(BARE_COPY)
    if not (source == copy == bare):
        sys.exit(f"FAIL: {label}: row counts differ: source {source}, davit's copy {copy}, bare copy {bare}")
    server.drop_copies()
    return Engine(key, label, bare_b, davit_b, bare_r, davit_r, again, max(rss), size_mb)


def report(engines: list[Engine], goals: Goals, rounds: int) -> None:
    rows = []
    for e in engines:
        for what, bare, davit in (("backup", e.bare_backup, e.davit_backup), ("restore", e.bare_restore, e.davit_restore)):
            for i, (b, d) in enumerate(zip(bare, davit, strict=True)):
                rows.append(
                    [
                        f"{e.key} {what}",
                        str(i + 1),
                        f"{b.seconds:.1f}",
                        f"{d.seconds:.1f}",
                        f"{b.seconds / d.seconds:.2f}x",
                        f"{b.client_cpu:.1f} + {b.server_cpu:.1f}",
                        f"{d.client_cpu:.1f} + {d.server_cpu:.1f}",
                        f"{b.load:.1f}/{d.load:.1f}",
                    ]
                )
    print("CPU s: the bare tools' processes (or davitd) + the server's, a figure the machine's load does not move much")
    print(
        table(
            ["operation", "round", "bare s", "davit s", "ratio", "CPU s bare", "CPU s davit", "load bare/davit"],
            rows,
            title=f"{rounds} paired rounds; {cpu_count()} CPUs, {load_note()}",
        )
    )
    for e in engines:
        for what, bare, davit in (("backup", e.bare_backup, e.davit_backup), ("restore", e.bare_restore, e.davit_restore)):
            ratios = [b.seconds / d.seconds for b, d in zip(bare, davit, strict=True)]
            goals.ratio(
                f"{e.key}_{what}",
                statistics.median(ratios),
                f"{statistics.median(d.seconds for d in davit):.1f} s",
                f"bare {statistics.median(b.seconds for b in bare):.1f} s",
                f"median of {len(ratios)} paired rounds: "
                + " ".join(f"{r:.2f}" for r in ratios)
                + f"; {e.size_mb:.0f} MB database; loads "
                + " ".join(f"{d.load:.1f}" for d in davit),
            )
        goals.absolute(
            f"{e.key}_again",
            max(e.again),
            f"{max(e.again):.2f}%",
            "of what the first backup added; each: " + " ".join(f"{a:.2f}" for a in e.again),
        )
    peaks = [e.rss for e in engines if e.rss]
    if peaks:
        goals.absolute("rss", max(peaks), f"{max(peaks):.0f} MB", ", ".join(f"{e.key} {e.rss:.0f} MB" for e in engines if e.rss))
    else:
        goals.skipped("rss", "no daemon ran")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="pg,my", help="comma-separated engines: pg (PostgreSQL), my (MariaDB)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--pg-scale", type=int, default=70, help="pgbench -i -s (default 70: ~1 GB)")
    parser.add_argument("--my-tables", type=int, default=8)
    parser.add_argument("--my-rows", type=int, default=600_000, help="rows per MariaDB table (default 600,000: ~1 GB of SQL)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "sql")
    add_goal_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pg_scale, args.my_tables, args.my_rows = 1, 1, 2, 5000
    only = set(args.only.split(","))
    state = peers()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    goals = Goals("sql", GOALS)
    engines: list[Engine] = []
    with tempfile.TemporaryDirectory(prefix="davit-bench-sql-") as private:  # 0700: the bare tools' password files
        for key, name, cls in (("pg", "postgres", Postgres), ("my", "mariadb", Mariadb)):
            if key not in only:
                for goal in ("backup", "restore", "again"):
                    goals.skipped(f"{key}_{goal}", f"--only {args.only}")
                continue
            if not state.get(name, {}).get("ok"):
                sys.exit(f"the {name} peer is not up: python -m tests.peers up --only {name}")
            server: Postgres | Mariadb = cls(state[name], Path(private))
            size = server.seed(args.pg_scale) if isinstance(server, Postgres) else server.seed(args.my_tables, args.my_rows)
            print(f"{name}: {DB} is {size:.0f} MB on the server ({load_note()})", flush=True)
            engines.append(measure(key, name, server, size, args.rounds, work))
    report(engines, goals, args.rounds)
    raise SystemExit(goals.finish(args.goals_json))


if __name__ == "__main__":
    main()

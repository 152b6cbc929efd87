"""Small helpers shared by the benchmarks: tables, disk description, timestamps, davit's log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


def table(headers: list[str], rows: list[list[str]], title: str = "") -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False)))

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def disk_of(path: Path) -> str:
    """Which device, filesystem type and mount point hold `path`, as `df` reports them."""
    try:
        out = (
            subprocess.run(["df", "--output=source,fstype,target", str(path)], capture_output=True, text=True, check=True)
            .stdout.splitlines()[-1]
            .split()
        )
        return f"{out[0]} ({out[1]}, mounted on {out[2]})"
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown disk"


def ts(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 timestamp with an offset (davit's recorded_at)."""
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class Row:
    position: int
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    recorded_at: str


class LogReader:
    """Read-only access to davit's event log (`H/state/davit.db`), the way an operator's script would."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()
        return [Row(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def after(self, position: int, type_: str | None = None) -> list[Row]:
        cols = "SELECT position, stream, version, type, data, recorded_at FROM events"
        if type_ is None:
            return self._query(f"{cols} WHERE position > ? ORDER BY position", (position,))
        return self._query(f"{cols} WHERE position > ? AND type = ? ORDER BY position", (position, type_))

    def stream(self, stream: str) -> list[Row]:
        return self._query(
            "SELECT position, stream, version, type, data, recorded_at FROM events WHERE stream = ? ORDER BY version",
            (stream,),
        )

    def head(self) -> int:
        rows = self._query("SELECT position, stream, version, type, data, recorded_at FROM events ORDER BY position DESC LIMIT 1")
        return rows[0].position if rows else 0


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def load_note() -> str:
    """The machine's load averages: other work on it skews every figure, so say how busy it was."""
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


# --- goals: one line per goal, and the JSON `make bench` gathers into its summary ------------

GOALS_MISSED = 3  # exit code of a bench that measured everything but missed a goal (0: all met)
GOAL_PREFIX = "GOAL"  # every goal line starts with it, so scripts and tests can pick them out


@dataclass(frozen=True)
class Spec:
    """A goal as the issues state it: `measure` compared with `op` against `limit` (in `unit`:
    "x" for a ratio davit / baseline figure, else an absolute figure such as "%" or " MiB")."""

    measure: str
    op: str  # ">=", "<=" or "<"
    limit: float
    unit: str
    issue: int

    def holds(self, value: float) -> bool:
        return {">=": value >= self.limit, "<=": value <= self.limit, "<": value < self.limit}[self.op]

    @property
    def text(self) -> str:
        if self.unit == "x":  # one decimal, as every goal had it, unless the limit needs more (0.02x)
            return f"{self.op} {self.limit:.1f}x" if round(self.limit, 1) == self.limit else f"{self.op} {self.limit:g}x"
        return f"{self.op} {self.limit:g}{self.unit}"


@dataclass(frozen=True)
class Goal:
    """One goal line: what was measured, davit's figure, the baseline's, their ratio, the verdict."""

    bench: str
    measure: str
    davit: str
    baseline: str
    ratio: str
    goal: str
    verdict: str  # "met", "missed" or "skipped"
    note: str
    load: str
    issue: int

    def line(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (
            f"{GOAL_PREFIX} {self.bench}: {self.measure} | davit {self.davit} | baseline {self.baseline} | "
            f"ratio {self.ratio} | goal {self.goal} | {self.verdict}{note} | load {self.load}"
        )


def load_short() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


class Goals:
    """The goal lines of one bench run: each bench declares its `Spec`s at its top, reports a
    figure (or why it has none) for every one, and `finish` prints them, writes them as JSON for
    `bench/summary.py` and gives the exit code. A spec left without a line is a bench bug."""

    def __init__(self, bench: str, specs: dict[str, Spec]) -> None:
        self.bench, self.specs = bench, specs
        self.lines: dict[str, Goal] = {}

    def _add(self, key: str, davit: str, baseline: str, ratio: str, verdict: str, note: str) -> None:
        spec = self.specs[key]
        self.lines[key] = Goal(
            self.bench, spec.measure, davit, baseline, ratio, spec.text, verdict, note, load_short(), spec.issue
        )

    def ratio(self, key: str, value: float, davit: str, baseline: str, note: str = "", digits: int = 2) -> None:
        """A ratio goal: `value` is the ratio, `davit` and `baseline` the figures it came from."""
        self._add(key, davit, baseline, f"{value:.{digits}f}x", "met" if self.specs[key].holds(value) else "missed", note)

    def absolute(self, key: str, value: float, shown: str, note: str = "") -> None:
        """A goal on davit's own figure (a peak RSS, a share of time): no baseline, no ratio."""
        self._add(key, shown, "-", "-", "met" if self.specs[key].holds(value) else "missed", note)

    def skipped(self, key: str, why: str) -> None:
        self._add(key, "-", "-", "-", "skipped", why)

    def finish(self, json_path: Path | None) -> int:
        """Print the goal lines, write them to `json_path`; 0 if none was missed, else GOALS_MISSED."""
        missing = [self.specs[k].measure for k in self.specs if k not in self.lines]
        print(f"\nGoals of bench/{self.bench}.py ({load_note()}):")
        for key in self.specs:
            if key in self.lines:
                print(self.lines[key].line())
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            in_order = [vars(self.lines[k]) for k in self.specs if k in self.lines]
            json_path.write_text(json.dumps(in_order, indent=1) + "\n")
        if missing:
            raise SystemExit(f"FAIL: bench/{self.bench}.py printed no line for: {'; '.join(missing)}")
        missed = [g for g in self.lines.values() if g.verdict == "missed"]
        if missed:
            print(f"{len(missed)} of {len(self.lines)} goals missed (exit {GOALS_MISSED})")
            return GOALS_MISSED
        return 0


def add_goal_arguments(parser: Any) -> None:
    """`--quick` and `--goals-json`, the same on every bench."""
    parser.add_argument(
        "--quick", action="store_true", help="a tiny size and one round: every goal line, ratios meaningless (CI's smoke run)"
    )
    parser.add_argument("--goals-json", type=Path, default=None, help="also write the goal lines to this file as JSON")

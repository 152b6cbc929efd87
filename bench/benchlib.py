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

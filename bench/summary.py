"""The summary table of `make bench`: every goal line of every bench, from their `--goals-json` files.

Run: `.venv/bin/python bench/summary.py FILE_OR_DIR ...` (a directory means every `*.json` in it,
in name order). Exit 0 if no goal was missed, 3 (benchlib.GOALS_MISSED) if one was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchlib import GOALS_MISSED, load_note, table

HEADERS = ["bench", "measure", "davit", "baseline", "ratio", "goal", "verdict", "load 1/5 min", "issue"]


def read(paths: list[Path]) -> list[dict[str, Any]]:
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    goals: list[dict[str, Any]] = []
    for file in files:
        goals += json.loads(file.read_text())
    return goals


def render(goals: list[dict[str, Any]]) -> str:
    rows = [
        [
            g["bench"],
            g["measure"],
            g["davit"],
            g["baseline"],
            g["ratio"],
            g["goal"],
            g["verdict"] + (f" ({g['note']})" if g["note"] else ""),
            g["load"],
            str(g["issue"]),
        ]
        for g in goals
    ]
    counts = {v: sum(1 for g in goals if g["verdict"] == v) for v in ("met", "missed", "skipped")}
    title = f"\nSummary: {len(goals)} goals, {counts['met']} met, {counts['missed']} missed, {counts['skipped']} skipped"
    return table(HEADERS, rows, title)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="goal files (--goals-json) or directories of them")
    goals = read(parser.parse_args().paths)
    print(render(goals))
    print(f"at the end: {load_note()}")
    return GOALS_MISSED if any(g["verdict"] == "missed" for g in goals) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`davit show RUN --follow`: a run's steps as they progress, until it ends, then its outcome.

Reads the run's stream as davitd appends it (polling the read-only log: nothing is asked of
davitd, and the view is the fold of what is stored, as `davit show` gives) and draws a bar per
step with done/total, percent, rate and ETA (`davit/domain/progress.py`). On a terminal the bars
are rich's live display; otherwise (a pipe, a file, a CI log) one plain line per step whenever a
checkpoint moved it and one per state change, with no control characters. Ends with the run's
outcome line on stderr and exit status 0 only if it succeeded (`report_outcome`).

Names in the view come from job files and servers (a collection or table name): control
characters in them are escaped before they reach the terminal, and never read as rich markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import click
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from davit.daemon.cli.common import human_bytes, load_run
from davit.domain import events as ev
from davit.domain.machine import TERMINAL
from davit.domain.ports import LogReader
from davit.domain.progress import Progress as StepProgress
from davit.domain.progress import duration
from davit.domain.runs import RunView, StepView, apply
from davit.domain.terminaltext import for_terminal

POLL_SECONDS = 0.5


def amount(p: StepProgress, value: int | float) -> str:
    return human_bytes(int(value)) if p.unit == "bytes" else f"{int(value)} items"


def describe(step: StepView, p: StepProgress) -> str:
    """One step's progress as words: `store 1.2 GiB / 3.4 GiB 35.3% 12.0 MiB/s ETA 3m05s`."""
    parts = [for_terminal(step.name), step.status]
    if p.total is None and not p.done:
        return " ".join(parts)  # a step that counts nothing (a publish): its status says it all
    parts.append(amount(p, p.done) + (f" / {amount(p, p.total)}" if p.total is not None else ""))
    if p.percent is not None:
        parts.append(f"{p.percent:.1f}%")
    if p.rate is not None:
        parts.append(f"{amount(p, p.rate)}/s")
    if step.status == "running" and p.total is not None:
        parts.append(f"ETA {duration(p.eta_seconds)}")
    return " ".join(parts)


def run_progress(view: RunView) -> str:
    """`davit runs`' progress of a run: its current step's percent and ETA, else which step of
    the plan it is on (a SQL backup's steps are its tables); "-" when it is not working."""
    step = view.current_step
    if step is None or view.state in TERMINAL:
        return "-"
    name = for_terminal(step.name)
    name = name if len(name) <= 32 else name[:31] + "…"
    p = step.progress()
    if p.percent is not None:
        return f"{name} {p.percent:.0f}% ETA {duration(p.eta_seconds)}"
    done = sum(1 for s in view.steps.values() if s.status == "done")
    return f"{name} (step {done + 1}/{len(view.plan)})" if view.plan else name


async def _next(store: LogReader, view: RunView) -> bool:
    """Apply what was appended to the run's stream since `view`; True if anything was."""
    new = await store.read_stream(ev.run_stream(view.run_id), from_version=view.version + 1)
    for stored in new:
        apply(view, stored)
    return bool(new)


class _PlainLines:
    """A line per change: state changes and each step whose progress moved."""

    def __init__(self) -> None:
        self._said: dict[str, str] = {}

    def show(self, view: RunView) -> None:
        self._say("", f"run {view.run_id} {view.state.value}")
        for step in view.steps.values():
            if step.status != "pending":
                self._say(step.name, describe(step, step.progress()))

    def _say(self, key: str, line: str) -> None:
        if self._said.get(key) != line:
            self._said[key] = line
            click.echo(f"{datetime.now(UTC).strftime('%H:%M:%S')} {line}")

    def close(self) -> None:
        pass


class _RateEta(ProgressColumn):
    """Rate and ETA as the log says them (not rich's own guess from redraws)."""

    def __init__(self, facts: Callable[[TaskID], str]) -> None:
        super().__init__()
        self._facts = facts

    def render(self, task: Task) -> Text:
        return Text(self._facts(task.id))


class _Bars:
    """rich's live display: a bar per step of the plan."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskID] = {}
        self._facts: dict[TaskID, str] = {}
        self._state = ""
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            _RateEta(lambda tid: self._facts.get(tid, "")),
            console=Console(highlight=False),
        )
        self._progress.start()

    def show(self, view: RunView) -> None:
        if view.state.value != self._state:
            self._state = view.state.value
            self._progress.console.print(Text(f"run {view.run_id} {self._state}"))
        for step in view.steps.values():
            p = step.progress()
            if step.name not in self._tasks:
                self._tasks[step.name] = self._progress.add_task(for_terminal(step.name), total=None)
            tid = self._tasks[step.name]
            done = step.status == "done"
            total = 1.0 if done else (p.total if p.total else None)
            completed = 1.0 if done else float(p.done)
            self._progress.update(tid, total=total, completed=completed)
            self._facts[tid] = describe(step, p).removeprefix(for_terminal(step.name) + " ")

    def close(self) -> None:
        self._progress.stop()


async def follow(store: LogReader, run_id: str, live: bool) -> RunView:
    """Show the run until it ends; its final view."""
    view = await load_run(store, run_id)
    display: _PlainLines | _Bars = _Bars() if live else _PlainLines()
    try:
        display.show(view)
        last_redraw = time.monotonic()
        while not (view.version and view.state in TERMINAL):
            await anyio.sleep(POLL_SECONDS)
            moved = await _next(store, view)
            # a live bar's rate and ETA are redrawn even when nothing was recorded
            if moved or (live and time.monotonic() - last_redraw >= 1.0):
                display.show(view)
                last_redraw = time.monotonic()
    finally:
        display.close()
    return view

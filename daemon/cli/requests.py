"""Appending requests for davitd and waiting for a run to reach a final state."""

from __future__ import annotations

import time

import anyio

from daemon.cli.common import load_run
from daemon.recorder import append_unordered
from domain import events as ev
from domain.machine import TERMINAL, RunState
from domain.runs import RunView
from eventstore.sqlite import SqliteEventStore


async def send(store: SqliteEventStore, command: ev.Event) -> None:
    await append_unordered(store, ev.REQUESTS_STREAM, command)


async def wait_for_end(store: SqliteEventStore, run_id: str, timeout: float | None) -> RunView | None:
    """The run once it is final (`failed` counts), or None if `timeout` passes first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        view = await load_run(store, run_id)
        if view.version and view.state in TERMINAL:
            return view
        if deadline is not None and time.monotonic() >= deadline:
            return None
        await anyio.sleep(0.2)


def succeeded(view: RunView) -> bool:
    return view.state is RunState.SUCCEEDED

"""Appending requests for davitd and waiting for a run to reach a final state.

`send` returns the position its request was recorded at; `wait_for_end` given that position
also watches the daemon stream for `RequestFailed` naming it, so a request davitd could not
handle ends the wait at once instead of at the timeout.
"""

from __future__ import annotations

import time

import anyio
import click

from davit.daemon.cli.common import load_run
from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.domain.errors import ConcurrencyError, RunDidNotSucceed
from davit.domain.machine import TERMINAL, RunState
from davit.domain.ports import LogReader, RunLog
from davit.domain.runs import RunView


async def send(store: RunLog, command: ev.Event) -> int:
    """Append `command` to the requests stream; its position. The event id is fixed before the
    first try, so a retry after a lost acknowledgement records it once."""
    new = ev.NewEvent.of(new_event_id(), command)
    for _ in range(100):
        try:
            (position,) = await store.append(ev.REQUESTS_STREAM, await store.stream_version(ev.REQUESTS_STREAM), [new])
            return position
        except ConcurrencyError:
            continue  # another CLI appended a request first
    raise ConcurrencyError(ev.REQUESTS_STREAM, -1, await store.stream_version(ev.REQUESTS_STREAM))


async def wait_for_end(
    store: LogReader, run_id: str, timeout: float | None, request: int | None = None
) -> RunView | ev.RequestFailed | None:
    """The run once it is final (`failed` counts); the `RequestFailed` for the request at
    position `request` if davitd could not handle it; None if `timeout` passes first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = request or 0  # the daemon stream is read from here on, a page per poll
    while True:
        view = await load_run(store, run_id)
        if view.version and view.state in TERMINAL:
            return view
        if request is not None:
            for stored in await store.read_all(seen, 500, ev.DAEMON_STREAM):
                seen = stored.position
                if stored.type == ev.RequestFailed.type_name() and stored.data.get("position") == request:
                    return ev.RequestFailed.model_validate(stored.data)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        await anyio.sleep(0.2)


async def wait_for_run(store: LogReader, run_id: str, timeout: float | None, request: int, what: str) -> RunView:
    """The run once it is final, for `--wait`; `RunDidNotSucceed` if `timeout` passes first or
    davitd could not handle the request (`what` names it: "the cancel of R")."""
    view = await wait_for_end(store, run_id, timeout, request=request)
    if view is None:
        raise RunDidNotSucceed(run_id, f"run {run_id} did not end within {timeout:g} s")
    if isinstance(view, ev.RequestFailed):
        raise RunDidNotSucceed(run_id, f"davitd could not handle {what}: {view.reason}")
    return view


def succeeded(view: RunView) -> bool:
    return view.state is RunState.SUCCEEDED


def report_outcome(run_id: str, view: RunView) -> None:
    """Print how the waited-for run ended (with its error) on stderr; `RunDidNotSucceed` (already
    reported) unless it succeeded."""
    outcome = f"{run_id} {view.state.value}" + (f": {view.error}" if view.error else "")
    click.echo(outcome, err=True)
    if not succeeded(view):
        raise RunDidNotSucceed(run_id, outcome, view.state.value, reported=True)

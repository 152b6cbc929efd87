"""`davit cancel RUN`: stop a run at its next chunk boundary; it ends `cancelled` (or
`rolled_back` with the cause "cancelled by operator" if it must put things back first). A
cancel that comes once the run's committing step has started (a backup's `publish`) is
ignored: the run ends as its work does, and `--wait` says so and exits 1."""

from __future__ import annotations

import click

from davit.daemon.cli.common import resolve_run, with_store
from davit.daemon.cli.requests import send, wait_for_run
from davit.domain.commands import CancelRun
from davit.domain.errors import RunDidNotSucceed
from davit.domain.ports import EventLog


@click.command("cancel")
@click.argument("run")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 1).")
@click.pass_context
def command(ctx: click.Context, run: str, wait: bool, timeout: float | None) -> None:
    """Cancel RUN (any unique prefix of its id)."""

    async def go(store: EventLog) -> None:
        run_id = await resolve_run(store, run)
        position = await send(store, CancelRun(run_id=run_id))
        click.echo(run_id)
        if not wait:
            return
        view = await wait_for_run(store, run_id, timeout, position, f"the cancel of {run_id}")
        late = view.cancel_ignored
        outcome = f"{run_id} {view.state.value}" + (
            f" (the cancel came after step {late['step']} had started, which commits the run)" if late else ""
        )
        click.echo(outcome, err=True)
        if not view.cancelled:
            raise RunDidNotSucceed(run_id, outcome, view.state.value, reported=True)

    with_store(ctx, go, write=True)

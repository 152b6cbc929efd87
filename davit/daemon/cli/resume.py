"""`davit resume RUN`: requeue an interrupted, waiting or failed run from its last checkpoint."""

from __future__ import annotations

import click

from davit.daemon.cli.common import resolve_run, with_store
from davit.daemon.cli.requests import send
from davit.domain.commands import ResumeRun
from davit.domain.ports import EventLog


@click.command("resume")
@click.argument("run")
@click.pass_context
def command(ctx: click.Context, run: str) -> None:
    """Resume RUN (any unique prefix of its id)."""

    async def go(store: EventLog) -> None:
        run_id = await resolve_run(store, run)
        await send(store, ResumeRun(run_id=run_id))
        click.echo(run_id)

    with_store(ctx, go, write=True)

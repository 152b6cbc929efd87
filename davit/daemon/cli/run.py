"""`davit run JOB`: ask the daemon to run a job now; print the run id; optionally wait."""

from __future__ import annotations

import click

from davit.daemon.cli.common import with_store
from davit.daemon.cli.requests import report_outcome, send, wait_for_run
from davit.daemon.jobs import JobRegistry
from davit.daemon.recorder import new_run_id
from davit.domain.commands import RunJobNow
from davit.domain.errors import UnknownJob
from davit.domain.ports import EventLog


@click.command("run")
@click.argument("job")
@click.option("--wait", is_flag=True, help="Wait for the run to end; exit 0 if it succeeded, 1 otherwise.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 1).")
@click.pass_context
def command(ctx: click.Context, job: str, wait: bool, timeout: float | None) -> None:
    """Run JOB now."""

    async def go(store: EventLog) -> None:
        registry = JobRegistry(store)
        await registry.load()
        if not any(j.name == job for j in registry.active()):
            raise UnknownJob(job)
        run_id = new_run_id()
        position = await send(store, RunJobNow(job=job, run_id=run_id))
        click.echo(run_id)
        if not wait:
            return
        view = await wait_for_run(store, run_id, timeout, position, f"the request to run {job}")
        report_outcome(run_id, view)

    with_store(ctx, go, write=True)

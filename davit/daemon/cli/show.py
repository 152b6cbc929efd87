"""`davit show RUN`: one run's state, steps, progress, checkpoints and error."""

from __future__ import annotations

import click

from davit.daemon.cli.common import emit_json, human_bytes, load_run, resolve_run, with_store
from davit.eventstore.sqlite import SqliteEventStore


@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="The run as one JSON object.")
@click.pass_context
def command(ctx: click.Context, run: str, as_json: bool) -> None:
    """Show a run (RUN may be any unique prefix of its id)."""

    async def go(store: SqliteEventStore) -> None:
        view = await load_run(store, await resolve_run(store, run))
        if as_json:
            emit_json(view.to_json())
            return
        click.echo(f"run       {view.run_id}")
        click.echo(f"job       {view.job} ({view.kind}), {view.reason}")
        click.echo(f"state     {view.state.value}   attempt {view.attempt}   interruptions {view.interruptions}")
        click.echo(f"queued    {view.queued_at}   started {view.started_at or '-'}   finished {view.finished_at or '-'}")
        click.echo(
            f"progress  {human_bytes(view.bytes_done)} in {view.items_done} items, "
            f"{view.checkpoints} checkpoints, {view.chunks_written} chunks written"
        )
        if view.snapshot_id:
            click.echo(f"snapshot  {view.snapshot_id}")
        if view.details:
            click.echo("details   " + ", ".join(f"{k}={v}" for k, v in view.details.items()))
        for name, step in view.steps.items():
            click.echo(
                f"step      {name:<12} {step.status:<8} {step.checkpoints} checkpoints  "
                f"{human_bytes(step.bytes_done)}  cursor={step.cursor.get('last') if step.cursor else '-'}"
            )
        for warning in view.warnings:
            click.echo(f"warning   {warning}")
        if view.cancel_ignored:
            late = view.cancel_ignored
            click.echo(
                f"cancel    ignored: {late['reason']} while {late['state']}, after step {late['step']} had "
                "started (it commits the run)"
            )
        if view.error:
            click.echo(f"error     {view.error_type}: {view.error}")
        if view.retry_at:
            click.echo(f"retry at  {view.retry_at}")

    with_store(ctx, go)

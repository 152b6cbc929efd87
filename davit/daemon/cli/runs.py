"""`davit runs`: runs with their state, newest last."""

from __future__ import annotations

import click

from davit.daemon.cli.common import emit_json, human_bytes, load_runs, table, with_store
from davit.daemon.cli.follow import run_progress
from davit.domain.machine import RunState
from davit.domain.ports import LogReader


@click.command("runs")
@click.option("--job", help="Only runs of this job.")
@click.option("--state", type=click.Choice([s.value for s in RunState]), help="Only runs in this state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@click.pass_context
def command(ctx: click.Context, job: str | None, state: str | None, as_json: bool) -> None:
    """List runs."""

    async def go(store: LogReader) -> None:
        views = sorted((await load_runs(store)).values(), key=lambda v: v.queued_at or "")
        views = [v for v in views if (job is None or v.job == job) and (state is None or v.state.value == state)]
        if as_json:
            for view in views:
                emit_json(view.to_json())
            return
        table(
            (
                [
                    v.run_id,
                    v.job,
                    v.kind,
                    v.state.value,
                    v.attempt,
                    human_bytes(v.bytes_done),
                    run_progress(v),
                    v.queued_at,
                    (v.error or "")[:60],
                ]
                for v in views
            ),
            ["run", "job", "kind", "state", "try", "done", "progress", "queued", "error"],
        )

    with_store(ctx, go)

"""`davit show RUN`: one run's state, steps, progress, checkpoints and error."""

from __future__ import annotations

import sys

import click

from davit.daemon.cli.common import emit_json, human_bytes, load_run, resolve_run, say, with_store
from davit.daemon.cli.follow import describe
from davit.daemon.cli.follow import follow as follow_run
from davit.daemon.cli.requests import report_outcome
from davit.domain.ports import LogReader


@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="The run as one JSON object.")
@click.option(
    "--follow",
    is_flag=True,
    help="Follow the run until it ends: a bar per step with rate and ETA (plain lines when not a terminal); "
    "exit 0 only if it succeeded.",
)
@click.pass_context
def command(ctx: click.Context, run: str, as_json: bool, follow: bool) -> None:
    """Show a run (RUN may be any unique prefix of its id)."""

    async def go(store: LogReader) -> None:
        run_id = await resolve_run(store, run)
        if follow:
            ended = await follow_run(store, run_id, live=not as_json and sys.stdout.isatty())
            report_outcome(run_id, ended)
            return
        view = await load_run(store, run_id)
        if as_json:
            emit_json(view.to_json())
            return
        say(f"run       {view.run_id}")
        say(f"job       {view.job} ({view.kind}), {view.reason}")
        say(f"state     {view.state.value}   attempt {view.attempt}   interruptions {view.interruptions}")
        say(f"queued    {view.queued_at}   started {view.started_at or '-'}   finished {view.finished_at or '-'}")
        say(
            f"progress  {human_bytes(view.bytes_done)} in {view.items_done} items, "
            f"{view.checkpoints} checkpoints, {view.chunks_written} chunks written"
        )
        if view.snapshot_id:
            say(f"snapshot  {view.snapshot_id}")
        if view.details:
            say("details   " + ", ".join(f"{k}={v}" for k, v in view.details.items()))
        for name, step in view.steps.items():
            say(
                f"step      {name:<12} {step.status:<8} {step.checkpoints} checkpoints  "
                f"{human_bytes(step.bytes_done)}  cursor={step.cursor.get('last') if step.cursor else '-'}"
            )
            if step.bytes_total is not None or step.items_total is not None:
                say(f"          {describe(step, step.progress())}")
        for warning in view.warnings:
            say(f"warning   {warning}")
        if view.cancel_ignored:
            late = view.cancel_ignored
            say(
                f"cancel    ignored: {late['reason']} while {late['state']}, after step {late['step']} had "
                "started (it commits the run)"
            )
        if view.error:
            say(f"error     {view.error_type}: {view.error}")
        if view.retry_at:
            say(f"retry at  {view.retry_at}")

    with_store(ctx, go)

"""`davit jobs`: the jobs defined from the jobs directory, and files that were rejected."""

from __future__ import annotations

import click

from davit.daemon.cli.common import emit_json, load_runs, table, with_store
from davit.daemon.jobs import JobRegistry
from davit.domain.ports import EventLog


@click.command("jobs")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
@click.option("--all", "show_all", is_flag=True, help="Include retired jobs.")
@click.pass_context
def command(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """List jobs with their kind, schedule and last run."""

    async def go(store: EventLog) -> None:
        registry = JobRegistry(store)
        await registry.load()
        runs = await load_runs(store)
        last = {}
        for view in sorted(runs.values(), key=lambda v: v.last_position):
            last[view.job] = view
        rows = []
        for job in sorted(registry.jobs.values(), key=lambda j: j.name):
            if job.retired and not show_all:
                continue
            run = last.get(job.name)
            item = {
                "name": job.name,
                "kind": job.kind,
                "file": job.file,
                "revision": job.revision,
                "schedule": job.spec.get("schedule"),
                "retired": job.retired,
                "last_run": run.run_id if run else None,
                "last_state": run.state.value if run else None,
            }
            rows.append(item)
            if as_json:
                emit_json(item)
        if not as_json:
            table(
                (
                    [
                        r["name"],
                        r["kind"],
                        r["schedule"] or "-",
                        r["last_run"] or "-",
                        r["last_state"] or "-",
                        "retired" if r["retired"] else r["file"],
                    ]
                    for r in rows
                ),
                ["job", "kind", "schedule", "last run", "state", "file"],
            )
        for file, _ in sorted(registry.rejected.items()):
            if not as_json:
                click.echo(f"rejected: {file} (see `davit history --all` for the reason)", err=True)

    with_store(ctx, go)

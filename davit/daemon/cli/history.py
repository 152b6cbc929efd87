"""`davit history`: events in log order, for a run, a job (its stream and its runs), or all."""

from __future__ import annotations

import json

import click

from davit.daemon.cli.common import emit_json, resolve_run, say, with_store
from davit.domain import events as ev
from davit.domain.ports import LogReader


def _brief(data: dict[str, object]) -> str:
    parts = []
    for key, value in data.items():
        if key in ("spec", "chunks_written") and value:
            value = f"<{len(value)} items>" if isinstance(value, list) else "{...}"
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={text}")
    return " ".join(parts)


@click.command("history")
@click.argument("run", required=False)
@click.option("--job", help="Events of this job and of its runs.")
@click.option("--all", "all_", is_flag=True, help="Every event (the default without RUN or --job).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are recorded.")
@click.option("--since", type=int, default=0, help="Only events after this global position.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def command(ctx: click.Context, run: str | None, job: str | None, all_: bool, follow: bool, since: int, as_json: bool) -> None:
    """Print events in order."""
    if sum(bool(x) for x in (run, job, all_)) > 1:
        raise click.UsageError("give one of RUN, --job or --all")

    async def go(store: LogReader) -> None:
        prefix: str | None = None
        wanted: set[str] | None = None
        if run:
            prefix = ev.run_stream(await resolve_run(store, run))
            wanted = {prefix}
        elif job:
            wanted = {ev.job_stream(job)}
        source = store.tail(since, prefix) if follow else store.iter_all(since, prefix)
        async for stored in source:
            if (
                wanted is not None
                and job
                and stored.stream == ev.job_stream(job)
                and stored.type == ev.JobRunTriggered.type_name()
            ):
                wanted.add(ev.run_stream(stored.data["run_id"]))
            if wanted is not None and stored.stream not in wanted:
                continue
            if as_json:
                emit_json(
                    {
                        "position": stored.position,
                        "stream": stored.stream,
                        "version": stored.version,
                        "type": stored.type,
                        "recorded_at": stored.recorded_at,
                        "data": stored.data,
                    }
                )
            else:
                say(f"{stored.position:>7} {stored.recorded_at[:23]} {stored.stream:<18} {stored.type:<20} {_brief(stored.data)}")

    try:
        with_store(ctx, go)
    except KeyboardInterrupt:
        pass

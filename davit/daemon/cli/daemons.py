"""`davit daemons`: the daemons of this event log: name, version, last heartbeat, runs held.

On PostgreSQL (several daemons may share the log) each daemon's row in the log's `daemons`
table, aged by the database server's clock, with the runs whose lease it holds as the log shows
them (a daemon `davit daemons forget` retired is not listed). On SQLite the log is one daemon's:
its heartbeat file in the state directory.
"""

from __future__ import annotations

import click

from davit.daemon.cli import forget
from davit.daemon.cli.common import emit_json, load_runs, state, table, with_store
from davit.daemon.config import Settings
from davit.daemon.eventlogs import AnyEventStore
from davit.daemon.heartbeat import HEARTBEAT_SECONDS, daemon_facts
from davit.daemon.leases import ROSTER_LIVE_SECONDS
from davit.domain import events as ev
from davit.domain.machine import TERMINAL
from davit.domain.ports import DaemonRoster

# A daemon whose last beat is older than this many beat intervals is shown as not beating.
STALE_BEATS = 3


@click.group("daemons", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per daemon.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """List the daemons of this event log and the runs each holds."""
    if ctx.invoked_subcommand is not None:
        return
    settings = state(ctx).settings

    async def go(store: AnyEventStore) -> list[dict[str, object]]:
        if not isinstance(store, DaemonRoster):
            return [_local(settings)]
        views = await load_runs(store)
        held: dict[str, list[str]] = {}
        for view in views.values():
            if view.owner is not None and view.state not in TERMINAL:
                held.setdefault(view.owner, []).append(view.run_id)
        rows = []
        for seen in await store.daemons():
            beat = seen.beat
            if await forgotten(store, beat.name):
                continue  # `davit daemons forget` retired it (its row stays in the table)
            rows.append(
                {
                    "name": beat.name,
                    "version": beat.version,
                    "host": beat.host,
                    "pid": beat.pid,
                    "started_at": beat.started_at,
                    "last_beat": seen.beat_at,
                    "age_seconds": round(seen.age_seconds, 1),
                    "alive": seen.age_seconds <= ROSTER_LIVE_SECONDS,
                    "runs_held": sorted(held.get(beat.name, [])),
                    "runs_executing": beat.runs,
                    "log_problem": beat.log_problem,
                }
            )
        return rows

    # (SQLite: the one daemon's heartbeat file; the log need not even exist yet)
    rows = [_local(settings)] if settings.event_store_url_path is None else with_store(ctx, go)
    if as_json:
        for row in rows:
            emit_json(row)
        return
    table(
        (
            [
                r["name"],
                r["version"],
                r["last_beat"],
                ("-" if r["age_seconds"] == -1.0 else f"{r['age_seconds']} s") + ("" if r["alive"] else " (not beating)"),
                ", ".join(r["runs_held"]) or "-",  # type: ignore[arg-type]
            ]
            for r in rows
        ),
        ["daemon", "version", "last heartbeat", "age", "runs held"],
    )


async def forgotten(store: AnyEventStore, name: str) -> bool:
    """Whether `davit daemons forget NAME` retired the name and no daemon claimed it since."""
    names = await store.read_stream(ev.name_stream(name))
    return bool(names) and names[-1].type == ev.NameForgotten.type_name()


def _local(settings: Settings) -> dict[str, object]:
    facts = daemon_facts(settings.state_dir, settings.lock_path)
    beat = facts.heartbeat
    alive = facts.lock_held and beat is not None and beat.age_seconds <= STALE_BEATS * HEARTBEAT_SECONDS
    return {
        "name": settings.daemon_name,
        "version": beat.version if beat else "",
        "host": "",
        "pid": beat.pid if beat else 0,
        "started_at": beat.started_at if beat else "",
        "last_beat": beat.beat_at if beat else (facts.heartbeat_problem or "never"),
        "age_seconds": round(beat.age_seconds, 1) if beat else -1.0,
        "alive": alive,
        "runs_held": [],
        "runs_executing": [],
        "log_problem": beat.log_problem if beat else None,
    }


command.add_command(forget.command)

"""`davit daemons forget OLD`: after a daemon was renamed, free the jobs its old name defined.

A job of a host's data (files, volumes, compose) is bound to the daemon whose jobs directory
defined it (`JobDefined.daemon`), so a daemon renamed from OLD to NEW finds its own job files
refused ("already defined by daemon 'OLD'"): davit cannot tell a rename from another host
whose jobs directory sits at the same path. The operator says it: once daemon OLD no longer
beats on the log, `forget OLD` retires every job OLD defined (`JobRetired`, reason "daemon OLD
forgotten", in one atomic append at the versions read), and the daemon whose files define them
defines them again in its name at its next pass over its directory (within 30 s). Their runs
and history stay. Refused while OLD beats (stop it first), for the name of this home's own
daemon, and on a SQLite log (one daemon's).

The name itself is retired too: `NameForgotten` on OLD's name stream (`name_stream`), in the
same atomic append, so `davit daemons` no longer lists OLD (its heartbeat row, which only the
log's store writes, stays in the table, hidden). A daemon started later under OLD claims the
name again (`NameClaimed`) and is listed again.
"""

from __future__ import annotations

import click

from davit.daemon.cli.common import state, with_store
from davit.daemon.eventlogs import AnyEventStore
from davit.daemon.jobs import JobRegistry
from davit.daemon.leases import ROSTER_LIVE_SECONDS
from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.domain.errors import ConcurrencyError, InvalidArgument
from davit.domain.ports import DaemonRoster


async def forget_daemon(store: AnyEventStore, old: str) -> list[str]:
    """Retire OLD's jobs and its name in one atomic append; the jobs retired. The name's stream
    is read before OLD's heartbeat row is looked at, and the append is made at that version: a
    daemon claiming OLD after the look (starting at this moment) makes the append fail, rather
    than have its name and jobs retired under it."""
    if not isinstance(store, DaemonRoster):
        raise InvalidArgument("OLD", "this event log (SQLite) is one daemon's: there is no other daemon to forget")
    names = await store.read_stream(ev.name_stream(old))
    roster = await store.daemons()
    for seen in roster:
        if seen.beat.name == old and seen.age_seconds < ROSTER_LIVE_SECONDS:
            raise InvalidArgument(
                "OLD",
                f"daemon {old!r} on host {seen.beat.host!r} (pid {seen.beat.pid}) beat {seen.age_seconds:.0f} s ago: "
                f"stop it first, then forget it once its last beat is {ROSTER_LIVE_SECONDS:.0f} s old",
            )
    registry = JobRegistry(store)
    await registry.load()
    jobs = sorted((job for job in registry.active() if job.daemon == old), key=lambda job: job.name)
    reason = f"daemon {old} forgotten"
    appends = [
        ev.StreamAppend(
            ev.job_stream(job.name),
            job.version,
            (ev.NewEvent.of(new_event_id(), ev.JobRetired(name=job.name, file=job.file, reason=reason)),),
        )
        for job in jobs
    ]
    # the name, once: listed (a row) or claimed, and not forgotten since
    listed = any(seen.beat.name == old for seen in roster)
    if (listed or names) and not (names and names[-1].type == ev.NameForgotten.type_name()):
        forgotten = ev.NewEvent.of(new_event_id(), ev.NameForgotten(name=old))
        appends.append(ev.StreamAppend(ev.name_stream(old), len(names), (forgotten,)))
    if appends:
        try:
            await store.append_atomic(appends)
        except ConcurrencyError as exc:
            raise InvalidArgument(
                "OLD",
                f"the log changed while {old!r} was being forgotten ({exc}): did a daemon of this name start? nothing retired",
            ) from exc
    return [job.name for job in jobs]


@click.command("forget")
@click.argument("old")
@click.pass_context
def command(ctx: click.Context, old: str) -> None:
    """Retire the jobs daemon OLD defined (it was renamed or is gone), so another daemon's files define them."""
    settings = state(ctx).settings
    if old == settings.daemon_name:
        raise InvalidArgument("OLD", f"{old!r} is this home's own daemon name ({settings.config_file}): it cannot be forgotten")

    async def go(store: AnyEventStore) -> list[str]:
        return await forget_daemon(store, old)

    retired = with_store(ctx, go, write=True)
    if not retired:
        click.echo(f"no job is defined by daemon {old}")
    for name in retired:
        click.echo(f"job {name} retired (defined by daemon {old})")

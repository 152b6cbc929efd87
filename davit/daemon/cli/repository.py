"""`davit repository passphrase NAME`: change an encrypted repository's passphrase.
`davit repository copy SRC DST`: ask davitd to copy snapshots from one repository into another.

A copy is a run of davitd, like `davit run`, not work done in the CLI's own process: it can be
long (every chunk DST lacks crosses over), and as a run it is recorded, resumes from its last
checkpoint after a crash or kill, is serialised with the runs that use the same repositories,
and reads the repositories' passphrases where davitd has them (an operator's shell may not)."""

from __future__ import annotations

from pathlib import Path

import click

from davit.adapters.repository.repository import Repository
from davit.adapters.secrets import resolve
from davit.daemon.cli.common import state, with_store
from davit.daemon.cli.requests import send, succeeded, wait_for_run
from davit.daemon.recorder import new_run_id
from davit.domain.commands import CopyNow
from davit.domain.errors import InvalidArgument, RunDidNotSucceed
from davit.domain.jobs import job_from_dict
from davit.domain.jobs.copy import adhoc_copy
from davit.eventstore.sqlite import SqliteEventStore


@click.group("repository")
def command() -> None:
    """The configured repositories."""


@command.command("passphrase")
@click.argument("name")
@click.option(
    "--new-passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="A file holding the new passphrase (never given on the command line).",
)
@click.pass_context
def passphrase(ctx: click.Context, name: str, new_passphrase_file: Path) -> None:
    """Change repository NAME's passphrase: the current one is read where the config says.

    Only the sealed key in the repository's config.json is rewritten. Afterwards point the
    repository's passphrase_file (or passphrase_env) at the new passphrase; a running davitd
    keeps working and reads the new one when it next opens the repository.
    """
    settings = state(ctx).settings
    section = settings.model.repositories.get(name)
    if section is None:
        raise InvalidArgument("NAME", f"no repository named {name!r} in the daemon config")
    if not section.encrypted:
        raise InvalidArgument("NAME", f"repository {name!r} has no passphrase_env or passphrase_file in the daemon config")
    old = resolve(section.passphrase_env, section.passphrase_file, f"repositories.{name}.passphrase")
    new = resolve(None, str(new_passphrase_file), "--new-passphrase")
    Repository.change_passphrase(settings.repositories[name], old, new)
    click.echo(f"repository {name}: passphrase changed; now point its passphrase_file or passphrase_env at the new passphrase")


@command.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--job", "jobs", multiple=True, help="Copy only this job's snapshots (repeatable); default: every job's.")
@click.option("--snapshot", help="Copy only this snapshot (an id or a unique prefix).")
@click.option("--wait", is_flag=True, help="Wait for the copy to end; exit 0 if it succeeded, 1 otherwise.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 1).")
@click.pass_context
def copy(
    ctx: click.Context, src: str, dst: str, jobs: tuple[str, ...], snapshot: str | None, wait: bool, timeout: float | None
) -> None:
    """Copy snapshots from repository SRC into repository DST; print the run id.

    Snapshots keep their ids, so only those DST lacks are copied, and only the chunks DST lacks
    are sent. davitd does the copy as a run (resumable, see `davit runs`)."""
    settings = state(ctx).settings
    for what, name in (("SRC", src), ("DST", dst)):
        if name not in settings.repositories:
            raise InvalidArgument(what, f"no repository named {name!r} in the daemon config")
    job_from_dict(adhoc_copy(src, dst, list(jobs), snapshot), "davit repository copy")  # InvalidJob: exit 2, davitd not asked

    async def go(store: SqliteEventStore) -> None:
        run_id = new_run_id()
        position = await send(
            store, CopyNow(run_id=run_id, source_repository=src, repository=dst, jobs=list(jobs), snapshot=snapshot)
        )
        click.echo(run_id)
        if not wait:
            return
        view = await wait_for_run(store, run_id, timeout, position, f"the copy from {src} to {dst}")
        outcome = f"{run_id} {view.state.value}" + (f": {view.error}" if view.error else "")
        click.echo(outcome, err=True)
        if not succeeded(view):
            raise RunDidNotSucceed(run_id, outcome, view.state.value, reported=True)

    with_store(ctx, go, write=True)

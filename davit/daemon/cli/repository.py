"""`davit repository init|check|stats|passphrase|prune NAME`: the configured repositories themselves.
`davit repository copy SRC DST`: ask davitd to copy snapshots from one repository into another.

The logic is in the adapters (`repository/check.py`, `repository/stats.py`); opening a
repository by name goes through `daemon/repositories.py`, like everywhere else.

A copy is a run of davitd, like `davit run`, not work done in the CLI's own process: it can be
long (every chunk DST lacks crosses over), and as a run it is recorded, resumes from its last
checkpoint after a crash or kill, is serialised with the runs that use the same repositories,
and reads the repositories' passphrases where davitd has them (an operator's shell may not).

A prune is the opposite: done here, in the CLI's own process, not by davitd. It is the
maintenance of a repository whose davitd holds a backup-only credential (one that may not
delete), so the credential that may delete is in the config this command is run with (`davit
--config maintenance.toml`), often on another host, never in davitd's. It needs no run: the
exclusive repository lock keeps every davitd's backups out while it deletes, and a prune cut
short leaves a consistent repository and is simply run again."""

from __future__ import annotations

from pathlib import Path

import click

from davit.adapters.repository.check import CheckReport, Subset, check_repository
from davit.adapters.repository.retention import prune_repository
from davit.adapters.repository.stats import RepositoryStats, repository_stats
from davit.adapters.secrets import resolve
from davit.daemon.cli.common import emit_json, human_bytes, state, table, with_store
from davit.daemon.cli.requests import report_outcome, send, wait_for_run
from davit.daemon.recorder import new_run_id
from davit.daemon.repositories import change_passphrase, configured_passphrase, init_repository, location_of, open_repository
from davit.daemon.retentionpolicies import job_specs, policies_for
from davit.domain.commands import CopyNow
from davit.domain.errors import InvalidArgument, VerificationFailed
from davit.domain.jobs import job_from_dict
from davit.domain.jobs.copy import adhoc_copy
from davit.domain.ports import EventLog


@click.group("repository")
def command() -> None:
    """The configured repositories."""


def _configured(ctx: click.Context, name: str) -> None:
    if name not in state(ctx).settings.locations:
        raise InvalidArgument("NAME", f"no repository named {name!r} in the daemon config")


@command.command("init")
@click.argument("name")
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A file holding the passphrase, instead of where the config says (for a passphrase_env "
    "set only in davitd's environment). The config must name a passphrase for NAME.",
)
@click.pass_context
def init(ctx: click.Context, name: str, passphrase_file: Path | None) -> None:
    """Create repository NAME where the config says: encrypted if its section names a
    passphrase, else not. Refused if it exists already (nothing is changed)."""
    _configured(ctx, name)
    settings = state(ctx).settings
    section = settings.model.repositories[name]
    if passphrase_file is not None and not section.encrypted:
        raise InvalidArgument(
            "--passphrase-file",
            f"repository {name!r} has no passphrase_env or passphrase_file in the daemon config: davitd could not open "
            "it encrypted; name the passphrase there first",
        )
    passphrase = (
        resolve(None, str(passphrase_file), "--passphrase-file") if passphrase_file else configured_passphrase(settings, name)
    )
    repo = init_repository(settings, name, passphrase)
    repo.close()
    kind = "encrypted (AES-256-GCM)" if passphrase is not None else "not encrypted"
    click.echo(f"repository {name}: created at {location_of(settings, name).where}, {kind}")


@command.command("check")
@click.argument("name")
@click.option("--read-data", is_flag=True, help="Also read every chunk back and check its hash.")
@click.option("--subset", metavar="N/M", help="Read only part N of M of the packs (chosen by pack id; implies --read-data).")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def check(ctx: click.Context, name: str, read_data: bool, subset: str | None, as_json: bool) -> None:
    """Check repository NAME: every index names a whole pack, every snapshot's manifest loads
    and its chunks are all stored; with --read-data every chunk is read back and verified.
    Exits 0 only if nothing is wrong."""
    _configured(ctx, name)
    try:
        part = Subset.parse(subset) if subset is not None else None
    except ValueError as exc:
        raise InvalidArgument("--subset", str(exc)) from None
    repo = open_repository(state(ctx).settings, name, create=False)
    try:
        report = check_repository(repo, read_data=read_data, subset=part)
    finally:
        repo.close()
    if as_json:
        emit_json({"repository": name, **report.to_json()})
    else:
        _print_check(name, report)
    if not report.ok:
        raise VerificationFailed(f"repository {name}", report.problems)


def _print_check(name: str, report: CheckReport) -> None:
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    read = f", {report.chunks_read} chunks read back from {report.packs_read} packs" if report.packs_read else ""
    click.echo(
        f"repository {name}: {report.snapshots} snapshots, {report.packs} packs ({report.unindexed_packs} without an index), "
        f"{report.chunks_referenced} chunk references{read}: {len(report.problems)} problems"
    )


@command.command("stats")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object.")
@click.pass_context
def stats(ctx: click.Context, name: str, as_json: bool) -> None:
    """What repository NAME holds: snapshots, packs, bytes stored and backed up, per job."""
    _configured(ctx, name)
    repo = open_repository(state(ctx).settings, name, create=False, listing_only=True)
    try:
        figures = repository_stats(repo)
    finally:
        repo.close()
    if as_json:
        emit_json({"repository": name, **figures.to_json()})
    else:
        _print_stats(name, figures)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _print_stats(name: str, s: RepositoryStats) -> None:
    damaged = f" ({s.damaged_snapshots} damaged)" if s.damaged_snapshots else ""
    click.echo(f"repository {name}: {s.snapshots} snapshots{damaged}, {s.packs} packs, {s.chunks} distinct chunks")
    click.echo(f"stored:  {human_bytes(s.stored_bytes)} ({human_bytes(s.pack_bytes)} in packs)")
    click.echo(f"logical: {human_bytes(s.logical_bytes)} backed up, {human_bytes(s.plain_bytes)} of distinct chunks")
    click.echo(f"dedup {_ratio(s.dedup_ratio)}, compression {_ratio(s.compression_ratio)}")
    if s.jobs:
        table(
            ([job, f["snapshots"], human_bytes(f["logical_bytes"])] for job, f in sorted(s.jobs.items())),
            ["job", "snapshots", "logical"],
        )


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
    old = configured_passphrase(settings, name)
    if old is None:
        raise InvalidArgument("NAME", f"repository {name!r} has no passphrase_env or passphrase_file in the daemon config")
    new = resolve(None, str(new_passphrase_file), "--new-passphrase")
    change_passphrase(settings, name, old, new)
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
        if name not in settings.locations:
            raise InvalidArgument(what, f"no repository named {name!r} in the daemon config")
    job_from_dict(adhoc_copy(src, dst, list(jobs), snapshot), "davit repository copy")  # InvalidJob: exit 2, davitd not asked

    async def go(store: EventLog) -> None:
        run_id = new_run_id()
        position = await send(
            store, CopyNow(run_id=run_id, source_repository=src, repository=dst, jobs=list(jobs), snapshot=snapshot)
        )
        click.echo(run_id)
        if not wait:
            return
        view = await wait_for_run(store, run_id, timeout, position, f"the copy from {src} to {dst}")
        report_outcome(run_id, view)

    with_store(ctx, go, write=True)


@command.command("prune")
@click.argument("name")
@click.option("--job", "jobs", multiple=True, help="Apply only this job's policy (repeatable); default: every job's.")
@click.option("--dry-run", is_flag=True, help="Only say what would be forgotten and how many packs would go.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def prune(ctx: click.Context, name: str, jobs: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Apply the retention policies of NAME's jobs (from the job files) and delete the packs no
    snapshot references, under the repository's exclusive lock.

    For a repository whose davitd has a backup-only credential (it skips its retention steps):
    run this with a config holding a maintenance credential (`davit --config FILE`). Refused
    (exit 1) if this config's credential may not delete either."""
    _configured(ctx, name)
    settings = state(ctx).settings
    repo = open_repository(settings, name, create=False)
    try:
        present = {s.job for s in repo.snapshots()}
        policies = policies_for(job_specs(settings.jobs_dir), name, present, jobs)
        result = prune_repository(repo, policies.by_job, dry_run=dry_run)
    finally:
        repo.close()
    if as_json:
        emit_json({"repository": name, **result, "notes": policies.notes})
        return
    for note in policies.notes:
        click.echo(f"note: {note}", err=True)
    verb = "would forget" if dry_run else "forgot"
    for job, figures in result["jobs"].items():
        click.echo(f"job {job}: kept {len(figures['kept'])}, {verb} {len(figures['forgotten'])}")
    if dry_run:
        click.echo(f"repository {name}: {result['packs_deleted']} packs would be deleted (dry run: nothing was)")
    else:
        click.echo(
            f"repository {name}: {result['packs_deleted']} packs deleted, {result['packs_rewritten']} rewritten, "
            f"{human_bytes(result['bytes_freed'])} freed"
        )

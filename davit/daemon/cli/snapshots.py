"""`davit snapshots`: snapshots in the configured repositories, damaged ones marked as such.

A snapshot whose manifest cannot be used (`davit/adapters/repository/manifests.py`) is listed with
the reason and nothing else; in an encrypted repository listed without its passphrase the
manifests cannot be authenticated, which the listing says ("unverified").
"""

from __future__ import annotations

from typing import Literal, overload

import click

from davit.adapters.repository.repository import DamagedSnapshot, Repository, SnapshotInfo
from davit.daemon.cli.common import emit_json, human_bytes, state, table
from davit.daemon.repositories import existing_repositories, open_repository
from davit.domain.errors import DavitError, InvalidArgument, SnapshotNotFound


def _repositories(ctx: click.Context) -> list[tuple[str, Repository]]:
    """Every configured repository that exists; one that cannot be reached or read from here
    is named on stderr and left out, so the others are still listed."""
    settings = state(ctx).settings
    names = existing_repositories(settings, unusable=_skipped)
    return [(name, open_repository(settings, name, create=False, listing_only=True)) for name in names]


def _skipped(name: str, exc: DavitError) -> None:
    click.echo(f"warning: repository {name} left out: {exc}", err=True)


def all_snapshots(ctx: click.Context, job: str | None = None) -> list[tuple[str, Repository, SnapshotInfo]]:
    """The usable snapshots of every configured repository."""
    return [(name, repo, snap) for name, repo in _repositories(ctx) for snap in repo.snapshots(job)]


def all_entries(ctx: click.Context, job: str | None = None) -> list[tuple[str, Repository, SnapshotInfo | DamagedSnapshot]]:
    """Usable and damaged snapshots of every configured repository (a damaged one has no job
    to filter on: it is listed whatever `job` is, since its manifest cannot say)."""
    found: list[tuple[str, Repository, SnapshotInfo | DamagedSnapshot]] = []
    for name, repo in _repositories(ctx):
        found += [(name, repo, snap) for snap in repo.snapshots(job)]
        found += [(name, repo, bad) for bad in repo.damaged_snapshots()]
    return found


@overload
def resolve_snapshot(
    ctx: click.Context, ref: str, damaged: Literal[False] = False, repository: str | None = None
) -> tuple[Repository, SnapshotInfo]: ...
@overload
def resolve_snapshot(
    ctx: click.Context, ref: str, damaged: Literal[True], repository: str | None = None
) -> tuple[Repository, SnapshotInfo | DamagedSnapshot]: ...
def resolve_snapshot(
    ctx: click.Context, ref: str, damaged: bool = False, repository: str | None = None
) -> tuple[Repository, SnapshotInfo | DamagedSnapshot]:
    """The one snapshot `ref` names in the configured repositories, for every command that takes
    a SNAPSHOT: the snapshot with that id, else the only one whose id starts with it (so an id
    that starts another is still selectable). Damaged snapshots count only with `damaged` (verify
    reports them; nothing can be read from one). `SnapshotNotFound` (exit 2) otherwise, and for
    an empty `ref`, which starts every id (`"$SNAP"` with SNAP unset must not pick the only one).
    `repository` looks in that repository only: a copied snapshot has the same id in both
    repositories (`davit repository copy`), and naming one picks which copy."""
    if not ref:
        raise SnapshotNotFound(ref)
    entries = all_entries(ctx) if damaged else all_snapshots(ctx)
    if repository is not None:
        if repository not in state(ctx).settings.locations:
            raise InvalidArgument("--repository", f"no repository named {repository!r} in the daemon config")
        entries = [entry for entry in entries if entry[0] == repository]
    matches = [(repo, snap) for _, repo, snap in entries if snap.id.startswith(ref)]
    matches = [m for m in matches if m[1].id == ref] or matches
    if len(matches) != 1:
        raise SnapshotNotFound(ref, len(matches))
    return matches[0]


def status(repo: Repository, snap: SnapshotInfo | DamagedSnapshot) -> str:
    if isinstance(snap, DamagedSnapshot):
        return f"DAMAGED: {snap.reason}"
    if snap.authenticated:
        return "ok (authenticated)"
    if repo.encrypted:
        return "unverified (no passphrase here to authenticate the manifest)"
    return "ok"


@click.command("snapshots")
@click.option("--job", help="Only snapshots of this job (damaged ones are always listed).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per snapshot.")
@click.pass_context
def command(ctx: click.Context, job: str | None, as_json: bool) -> None:
    """List snapshots, oldest first, then damaged ones."""
    rows = all_entries(ctx, job)
    if as_json:
        for repo_name, repo, snap in rows:
            extra = {} if isinstance(snap, DamagedSnapshot) else {"authenticated": snap.authenticated}
            emit_json({**snap.to_json(), **extra, "status": status(repo, snap), "repository": repo_name})
        return
    table(
        (
            [s.id, "", "", "", "", "", "", r, status(repo, s)]
            if isinstance(s, DamagedSnapshot)
            else [
                s.id,
                s.job,
                s.kind,
                s.created_at,
                s.stats.get("files", ""),
                human_bytes(s.stats.get("bytes", 0)),
                human_bytes(s.stats.get("bytes_stored", 0)),
                r,
                status(repo, s),
            ]
            for r, repo, s in rows
        ),
        ["snapshot", "job", "kind", "created", "files", "size", "added", "repository", "status"],
    )

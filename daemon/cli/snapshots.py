"""`davit snapshots`: snapshots in the configured repositories."""

from __future__ import annotations

import click

from adapters.repository.repository import Repository, SnapshotInfo
from daemon.cli.common import emit_json, human_bytes, state, table
from daemon.repositories import open_repository


def all_snapshots(ctx: click.Context, job: str | None = None) -> list[tuple[str, Repository, SnapshotInfo]]:
    found = []
    settings = state(ctx).settings
    for name, path in settings.repositories.items():
        if not (path / "config.json").exists():
            continue
        repo = open_repository(settings, name, create=False, listing_only=True)
        found += [(name, repo, snap) for snap in repo.snapshots(job)]
    return found


@click.command("snapshots")
@click.option("--job", help="Only snapshots of this job.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per snapshot.")
@click.pass_context
def command(ctx: click.Context, job: str | None, as_json: bool) -> None:
    """List snapshots, oldest first."""
    rows = all_snapshots(ctx, job)
    if as_json:
        for repo_name, _, snap in rows:
            emit_json({**snap.to_json(), "repository": repo_name})
        return
    table(([s.id, s.job, s.kind, s.created_at, s.stats.get("files", ""), human_bytes(s.stats.get("bytes", 0)),
            human_bytes(s.stats.get("bytes_stored", 0)), r] for r, _, s in rows),
          ["snapshot", "job", "kind", "created", "files", "size", "added", "repository"])

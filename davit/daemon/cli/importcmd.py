"""`davit import mongodump DIR --job NAME`: an existing mongodump directory (plain or gzip) as a
snapshot of job NAME, in the repository of the daemon's config; `davit import pgdump DIR --job
NAME`: a pg_dump directory or custom archive as a PostgreSQL snapshot; `davit import sql FILE --job NAME`:
a mariadb-dump script as a MariaDB/MySQL snapshot. Runs in the CLI process; the
snapshot records the directory it came from and nothing secret."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from davit.adapters.mongo.importdump import import_mongodump
from davit.daemon.cli.common import emit_json, state
from davit.daemon.repositories import open_repository
from davit.domain.errors import InvalidArgument
from davit.domain.jobs.base import JOB_NAME_PATTERN


@click.group("import")
def command() -> None:
    """Bring backups made by other tools into the repository."""


@command.command("mongodump")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--job", required=True, help="The job the snapshot belongs to (as if that job had made it).")
@click.option("--repository", "repo_name", default="local", show_default=True, help="Repository name.")
@click.option("--json", "as_json", is_flag=True, help="The snapshot as one JSON object.")
@click.pass_context
def mongodump(ctx: click.Context, directory: Path, job: str, repo_name: str, as_json: bool) -> None:
    """Import DIRECTORY, a mongodump output (DB/COLL.bson and DB/COLL.metadata.json, or .gz)."""
    _import(
        ctx,
        job,
        repo_name,
        as_json,
        directory,
        lambda repo, snapshot, tuning: import_mongodump(repo, directory.resolve(), job, snapshot, tuning),
        lambda stats: f"{stats['collections']} collections, {stats['documents']} documents",
    )


@command.command("pgdump")
@click.argument("directory", type=click.Path(path_type=Path, exists=True))
@click.option("--job", required=True, help="The job the snapshot belongs to (as if that job had made it).")
@click.option("--database", help="The database's name in the snapshot (default: the one the archive was dumped from).")
@click.option("--repository", "repo_name", default="local", show_default=True, help="Repository name.")
@click.option("--json", "as_json", is_flag=True, help="The snapshot as one JSON object.")
@click.pass_context
def pgdump(ctx: click.Context, directory: Path, job: str, database: str | None, repo_name: str, as_json: bool) -> None:
    """Import DIRECTORY, a `pg_dump -Fd` archive (plain or gzip data files), or a `pg_dump -Fc`
    file, as a snapshot postgres.restore restores."""
    from davit.adapters.postgres.importdump import import_pgdump

    _import(
        ctx,
        job,
        repo_name,
        as_json,
        directory,
        lambda repo, snapshot, tuning: import_pgdump(repo, directory.resolve(), job, snapshot, tuning, database),
        _tables_and_rows,
    )


def _import(
    ctx: click.Context,
    job: str,
    repo_name: str,
    as_json: bool,
    source: Path,
    run: Callable[[Any, str, Any], Any],
    describe: Callable[[dict[str, Any]], str],
) -> None:
    """Check the job name and the repository, `run(repo, snapshot_id, tuning)` the import into
    it, and say what it made: one JSON object, or a line with `describe(stats)`."""
    import re

    if not re.match(JOB_NAME_PATTERN, job):
        raise InvalidArgument("--job", f"--job {job!r} is not a job name (lower-case letters, digits, '.', '_', '-')")
    settings = state(ctx).settings
    if repo_name not in settings.locations:
        raise InvalidArgument("--repository", f"no repository named {repo_name!r} in the daemon config")
    repo = open_repository(settings, repo_name)
    try:
        info = run(repo, uuid.uuid4().hex[:12], settings.model.data_path.tuning())
    finally:
        repo.close()
    result = {**info.to_json(), "repository": repo_name}
    if as_json:
        emit_json(result)
        return
    stats = result["stats"]
    assert isinstance(stats, dict)
    click.echo(f"{result['id']}: imported {describe(stats)} from {source} as a snapshot of job {job}")


def _tables_and_rows(stats: dict[str, Any]) -> str:
    return f"{stats['tables']} tables, {stats['rows']} rows"


@command.command("sql")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--job", required=True, help="The job the snapshot belongs to (as if that job had made it).")
@click.option("--database", help="The database of a script without CREATE DATABASE/USE (`mariadb-dump DB`).")
@click.option("--repository", "repo_name", default="local", show_default=True, help="Repository name.")
@click.option("--json", "as_json", is_flag=True, help="The snapshot as one JSON object.")
@click.pass_context
def sql(ctx: click.Context, file: Path, job: str, database: str | None, repo_name: str, as_json: bool) -> None:
    """Import FILE, a mariadb-dump/mysqldump script, as a snapshot mysql.restore restores."""
    from davit.adapters.mysql.importdump import import_sql

    _import(
        ctx,
        job,
        repo_name,
        as_json,
        file,
        lambda repo, snapshot, tuning: import_sql(repo, file.resolve(), job, snapshot, tuning, database),
        _tables_and_rows,
    )

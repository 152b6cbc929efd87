"""`davit export mongodump SNAPSHOT DIR [--gzip]`: a MongoDB snapshot as a mongodump directory;
`davit export pgdump SNAPSHOT DIR [--database DB]`: a PostgreSQL snapshot as pg_dump directory
archives (see davit/adapters/postgres/dumpdir.py); `davit export sql SNAPSHOT FILE`: a
MariaDB/MySQL snapshot as a script `mariadb` replays (see davit/adapters/mysql/script.py).

Writes `DIR/DB/COLL.bson` (the collection's chunks, verified and concatenated: raw BSON,
never decoded) and `DIR/DB/COLL.metadata.json` (as stored at backup time), or their `.gz`
variants, so a davit backup is never a lock-in: `mongorestore --dir DIR` reads the result.
A snapshot with a namespace that would write outside DIR (a database name that is absolute,
`..`, empty or holds `/` or NUL) is refused whole, before anything is written (exit 1).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from davit.adapters.mongo.dumpdir import namespace_problem, write_collection
from davit.adapters.mongo.layout import read_tree
from davit.daemon.cli.common import emit_json
from davit.daemon.cli.snapshots import resolve_snapshot
from davit.domain.errors import InvalidArgument, UnsafeName


@click.group("export")
def command() -> None:
    """Export a snapshot into another tool's format."""


@command.command("mongodump")
@click.argument("snapshot")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--gzip", "compress", is_flag=True, help="Write .bson.gz and .metadata.json.gz files.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.option("--repository", help="Look in this repository only (a copied snapshot is in two).")
@click.pass_context
def mongodump(ctx: click.Context, snapshot: str, directory: Path, compress: bool, as_json: bool, repository: str | None) -> None:
    """Write SNAPSHOT (an id or unique prefix) of a mongo.backup job into DIRECTORY."""
    repo, snap = resolve_snapshot(ctx, snapshot, repository=repository)
    if snap.kind != "mongo":
        raise InvalidArgument("SNAPSHOT", f"snapshot {snap.id} is a {snap.kind} snapshot, not a MongoDB one")
    collections = documents = size = 0
    entries = list(read_tree(repo.tree_bytes(snap)))
    for entry in entries:  # every name first: a hostile one refuses the snapshot, nothing written
        problem = namespace_problem(entry.ns)
        if problem is not None:
            raise UnsafeName(snap.id, entry.ns, problem)
    for entry in entries:
        chunks = (repo.read_chunk(bytes.fromhex(c)) for c in entry.chunks)
        size += write_collection(directory, entry.ns, entry.meta, chunks, compress)
        collections += 1
        documents += entry.docs
    result = {
        "snapshot": snap.id,
        "directory": str(directory),
        "collections": collections,
        "documents": documents,
        "bytes": size,
        "gzip": compress,
    }
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{snap.id}: {result['collections']} collections, {result['documents']} documents written to {directory}")


@command.command("pgdump")
@click.argument("snapshot")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--database", "databases", multiple=True, help="Only this database (repeatable); one alone is written as DIRECTORY itself."
)
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.option("--repository", help="Look in this repository only (a copied snapshot is in two).")
@click.pass_context
def pgdump(
    ctx: click.Context, snapshot: str, directory: Path, databases: tuple[str, ...], as_json: bool, repository: str | None
) -> None:
    """Write SNAPSHOT (an id or unique prefix) of a postgres.backup job into DIRECTORY as a pg_dump
    directory archive (`pg_restore -d NEWDB DIRECTORY`); with several databases, DIRECTORY/DB each."""
    from davit.adapters.postgres.dumpdir import export_databases
    from davit.adapters.postgres.layout import read_tree as read_pg_tree

    repo, snap = resolve_snapshot(ctx, snapshot, repository=repository)
    if snap.kind != "postgres":
        raise InvalidArgument("SNAPSHOT", f"snapshot {snap.id} is a {snap.kind} snapshot, not a PostgreSQL one")
    per_db: dict[str, list[Any]] = {}
    for unit in read_pg_tree(repo.tree_bytes(snap)):
        if unit.kind != "roles":
            per_db.setdefault(unit.db, []).append(unit)
    missing = sorted(set(databases) - set(per_db))
    if missing:
        raise InvalidArgument(
            "--database",
            f"snapshot {snap.id} holds no database {', '.join(missing)} (it holds {', '.join(sorted(per_db)) or 'none'})",
        )
    if databases:
        per_db = {db: per_db[db] for db in databases}
    if not per_db:
        raise InvalidArgument("SNAPSHOT", f"snapshot {snap.id} holds no database")
    stats = export_databases(directory, per_db, repo.read_chunk, f"snapshot {snap.id}", nested=len(per_db) > 1)
    result = {"snapshot": snap.id, "directory": str(directory), **stats}
    if as_json:
        emit_json(result)
    else:
        for db, info in stats["databases"].items():
            where = directory / db if len(per_db) > 1 else directory
            counts = f"{info['tables']} tables, {info['rows']} rows, {info['large_objects']} large objects"
            click.echo(f"{snap.id}: database {db}: {counts} written to {where}")


@command.command("sql")
@click.argument("snapshot")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("--database", "databases", multiple=True, help="Only this database (repeatable).")
@click.option("--rename", "renames", multiple=True, metavar="SRC=DST", help="Create database SRC as DST (repeatable).")
@click.option("--repository", help="Look in this repository only (a copied snapshot is in two).")
@click.option(
    "--max-allowed-packet",
    "packet",
    type=click.IntRange(min=1 << 16, max=1 << 30),
    default=16 << 20,
    show_default=True,
    help="No row statement longer than this (bytes): the max_allowed_packet of the server and client replaying the script.",
)
@click.pass_context
def sql(
    ctx: click.Context,
    snapshot: str,
    file: Path,
    databases: tuple[str, ...],
    renames: tuple[str, ...],
    repository: str | None,
    packet: int,
) -> None:
    """Write SNAPSHOT (an id or unique prefix) of a mysql.backup job as one SQL script that
    `mariadb < FILE` replays (`-`: standard output); an INSERT longer than --max-allowed-packet
    is written in pieces under it."""
    from davit.adapters.mysql.layout import DatabaseEntry, TableEntry
    from davit.adapters.mysql.layout import read_tree as read_mysql_tree
    from davit.adapters.mysql.script import script
    from davit.adapters.outfile import write_atomically

    repo, snap = resolve_snapshot(ctx, snapshot, repository=repository)
    if snap.kind != "mysql":
        raise InvalidArgument("SNAPSHOT", f"snapshot {snap.id} is a {snap.kind} snapshot, not a MariaDB/MySQL one")
    entries = [e for e in read_mysql_tree(repo.tree_bytes(snap)) if isinstance(e, TableEntry | DatabaseEntry)]
    held = {e.db for e in entries}
    rename = dict(_pair(r) for r in renames)
    for option, names in (("--database", set(databases)), ("--rename", set(rename))):
        if names - held:
            missing = ", ".join(sorted(names - held))
            raise InvalidArgument(option, f"snapshot {snap.id} holds no database {missing} (it holds {', '.join(sorted(held))})")
    if databases:
        entries = [e for e in entries if e.db in databases]
    heading = f"davit export sql: snapshot {snap.id} of job {snap.job}\nreplay with: mariadb < FILE"
    blocks = script(entries, repo.read_chunk, rename, heading, packet)
    if str(file) == "-":
        out = sys.stdout.buffer
        for block in blocks:
            out.write(block)
        out.flush()
    else:
        write_atomically(file, blocks)
        click.echo(f"{snap.id}: {len(set(databases) or held)} databases written to {file}", err=True)


def _pair(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition("=")
    if not sep or not src or not dst:
        raise InvalidArgument("--rename", f"--rename {text!r} is not SRC=DST")
    return src, dst

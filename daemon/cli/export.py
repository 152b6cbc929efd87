"""`davit export mongodump SNAPSHOT DIR [--gzip]`: a MongoDB snapshot as a mongodump directory.

Writes `DIR/DB/COLL.bson` (the collection's chunks, verified and concatenated: raw BSON,
never decoded) and `DIR/DB/COLL.metadata.json` (as stored at backup time), or their `.gz`
variants, so a davit backup is never a lock-in: `mongorestore --dir DIR` reads the result.
A snapshot with a namespace that would write outside DIR (a database name that is absolute,
`..`, empty or holds `/` or NUL) is refused whole, before anything is written (exit 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from adapters.mongo.dumpdir import namespace_problem, write_collection
from adapters.mongo.layout import read_tree
from daemon.cli.common import emit_json, guard
from daemon.cli.snapshots import all_snapshots
from domain.errors import EXIT_USAGE, UnsafeName


@click.group("export")
def command() -> None:
    """Export a snapshot into another tool's format."""


@command.command("mongodump")
@click.argument("snapshot")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--gzip", "compress", is_flag=True, help="Write .bson.gz and .metadata.json.gz files.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def mongodump(ctx: click.Context, snapshot: str, directory: Path, compress: bool, as_json: bool) -> None:
    """Write SNAPSHOT (an id or unique prefix) of a mongo.backup job into DIRECTORY."""
    matches = [(repo, s) for _, repo, s in all_snapshots(ctx) if s.id.startswith(snapshot)]
    if len(matches) != 1:
        click.echo(f"davit: {'no' if not matches else 'more than one'} snapshot matches {snapshot!r}", err=True)
        sys.exit(EXIT_USAGE)
    repo, snap = matches[0]
    if snap.kind != "mongo":
        click.echo(f"davit: snapshot {snap.id} is a {snap.kind} snapshot, not a MongoDB one", err=True)
        sys.exit(EXIT_USAGE)

    def export() -> dict[str, object]:
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
        return {"snapshot": snap.id, "directory": str(directory), "collections": collections,
                "documents": documents, "bytes": size, "gzip": compress}

    result = guard(export)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{snap.id}: {result['collections']} collections, {result['documents']} documents "
                   f"written to {directory}")

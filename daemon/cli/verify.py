"""`davit verify SNAPSHOT`: re-read every chunk a snapshot references and check its hash."""

from __future__ import annotations

import sys

import click

from adapters.files.tree import read_lines
from daemon.cli.common import emit_json
from daemon.cli.snapshots import all_snapshots
from domain.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CorruptChunk


@click.command("verify")
@click.argument("snapshot")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def command(ctx: click.Context, snapshot: str, as_json: bool) -> None:
    """Verify SNAPSHOT (an id or a unique prefix)."""
    matches = [(r, repo, s) for r, repo, s in all_snapshots(ctx) if s.id.startswith(snapshot)]
    if len(matches) != 1:
        click.echo(f"davit: {'no' if not matches else 'more than one'} snapshot matches {snapshot!r}", err=True)
        sys.exit(EXIT_USAGE)
    _, repo, snap = matches[0]
    checked, bad = 0, []
    seen: set[str] = set()
    try:
        entries = read_lines(repo.open_tree(snap))
        for entry in entries:
            for chunk in entry.chunks:
                if chunk in seen:
                    continue
                seen.add(chunk)
                try:
                    repo.read_chunk(bytes.fromhex(chunk))
                    checked += 1
                except CorruptChunk as exc:
                    bad.append(f"{entry.path}: {exc}")
    except CorruptChunk as exc:
        bad.append(str(exc))
    result = {"snapshot": snap.id, "chunks_checked": checked, "problems": bad, "ok": not bad}
    if as_json:
        emit_json(result)
    else:
        for line in bad:
            click.echo(f"corrupt: {line}")
        click.echo(f"{snap.id}: {checked} chunks verified, {len(bad)} problems")
    sys.exit(EXIT_OK if not bad else EXIT_FAILED)

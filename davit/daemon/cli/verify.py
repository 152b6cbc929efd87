"""`davit verify SNAPSHOT`: re-read every chunk a snapshot references and check its hash.

A damaged snapshot (its manifest not usable, or in an encrypted repository not authenticated)
fails at once with the reason."""

from __future__ import annotations

import click

from davit.adapters.repository.repository import DamagedSnapshot
from davit.adapters.repository.treeformat import read_lines
from davit.daemon.cli.common import emit_json
from davit.daemon.cli.snapshots import resolve_snapshot
from davit.domain.errors import CorruptChunk, VerificationFailed


@click.command("verify")
@click.argument("snapshot")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.option("--repository", help="Look in this repository only (a copied snapshot is in two).")
@click.pass_context
def command(ctx: click.Context, snapshot: str, as_json: bool, repository: str | None) -> None:
    """Verify SNAPSHOT (an id or a unique prefix)."""
    repo, found = resolve_snapshot(ctx, snapshot, damaged=True, repository=repository)
    if isinstance(found, DamagedSnapshot):
        if as_json:
            emit_json({"snapshot": found.id, "chunks_checked": 0, "problems": [found.reason], "ok": False, "damaged": True})
        else:
            click.echo(f"damaged: {found.reason}")
            click.echo(f"{found.id}: damaged, its manifest cannot be used")
        raise VerificationFailed(f"snapshot {found.id}", [found.reason])
    snap = found
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
    if bad:
        raise VerificationFailed(f"snapshot {snap.id}", bad)

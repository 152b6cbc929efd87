"""`davit log verify`: recompute the event log's hash chain; name the first bad position."""

from __future__ import annotations

import sys

import click

from daemon.cli.common import emit_json, with_store
from domain.errors import EXIT_FAILED, EXIT_OK
from eventstore.sqlite import ChainReport, SqliteEventStore


@click.group("log")
def command() -> None:
    """The event log itself."""


@command.command("verify")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check the hash chain of the whole log and SQLite's integrity."""

    async def go(store: SqliteEventStore) -> tuple[ChainReport, str]:
        return await store.verify_chain(), await store.integrity_check()

    report, integrity = with_store(ctx, go)
    ok = report.ok and integrity == "ok"
    if as_json:
        emit_json({"ok": ok, "checked": report.checked, "first_bad_position": report.first_bad_position,
                   "reason": report.reason, "integrity_check": integrity})
    elif ok:
        click.echo(f"log ok: {report.checked} events, hash chain intact, integrity_check ok")
    else:
        if not report.ok:
            click.echo(f"log broken at position {report.first_bad_position}: {report.reason}")
        if integrity != "ok":
            click.echo(f"integrity_check: {integrity}")
    sys.exit(EXIT_OK if ok else EXIT_FAILED)

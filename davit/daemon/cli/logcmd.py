"""`davit log verify`: recompute the event log's hash chain; name the first bad position.

Read-only: the log is opened `mode=ro` (on PostgreSQL, in read-only transactions). A keyed log
(see `davit/eventstore/chain.py`) needs the log key (`Settings.log_key_path`); without it, or
with a damaged database, the answer is one line naming the key or what is damaged, never a
traceback."""

from __future__ import annotations

import click

from davit.daemon.cli.common import emit_json, state, with_store
from davit.daemon.eventlogs import AnyEventStore
from davit.domain.errors import VerificationFailed
from davit.eventstore.logkey import read_log_key
from davit.eventstore.sqlite import ChainReport, EventLogDamaged


@click.group("log")
def command() -> None:
    """The event log itself."""


@command.command("verify")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check the hash chain of the whole log (keyed, with the log key) and SQLite's integrity."""
    key_path = state(ctx).settings.log_key_path
    key = read_log_key(key_path)

    async def go(store: AnyEventStore) -> tuple[ChainReport, str]:
        try:
            report = await store.verify_chain(key, key_path)  # (SQLite or PostgreSQL: keyed alike)
        except EventLogDamaged as exc:
            report = ChainReport(False, 0, None, f"damaged: {exc.reason}")
        try:
            integrity = await store.integrity_check()
        except EventLogDamaged as exc:
            integrity = exc.reason
        return report, integrity

    report, integrity = with_store(ctx, go)
    ok = report.ok and integrity == "ok"
    keyed = report.keyed_from is not None
    if as_json:
        emit_json(
            {
                "ok": ok,
                "checked": report.checked,
                "first_bad_position": report.first_bad_position,
                "reason": report.reason,
                "integrity_check": integrity,
                "keyed": keyed,
                "keyed_from": report.keyed_from,
                "key": str(key_path) if key is not None else None,
            }
        )
    elif ok:
        how = (
            f"keyed from position {report.keyed_from} with {key_path}"
            if keyed
            else f"NOT keyed (no key at {key_path}: anyone who can write the log can recompute it)"
        )
        click.echo(f"log ok: {report.checked} events, hash chain intact, {how}, integrity_check ok")
    else:
        if not report.ok:
            where = f" at position {report.first_bad_position}" if report.first_bad_position else ""
            click.echo(f"log broken{where}: {report.reason}")
        if integrity != "ok":
            click.echo(f"integrity_check: {integrity}")
    if not ok:
        problems = [] if report.ok else [f"at position {report.first_bad_position}: {report.reason}"]
        raise VerificationFailed("the event log", problems + ([] if integrity == "ok" else [integrity]))

"""What the CLI's commands share: settings, the open log, run folding, output helpers.

Commands end by returning (exit 0) or by raising a davit error; `main.py` alone turns that
into a message and an exit code."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from davit.daemon.config import Settings, load_settings
from davit.daemon.eventlogs import AnyEventStore, open_for_cli
from davit.domain import events as ev
from davit.domain.ports import LogReader
from davit.domain.runs import RunView, fold
from davit.domain.terminaltext import for_terminal

T = TypeVar("T")


@dataclass
class CliState:
    home: Path | None
    config_file: Path | None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.home, self.config_file)
        return self._settings


def state(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    assert obj is not None
    return obj


def with_store(ctx: click.Context, fn: Callable[[AnyEventStore], Awaitable[T]], write: bool = False) -> T:
    """Run `fn` on the log. Read commands open it read-only (no migration, no write lock: they
    work on a read-only state directory while davitd writes); `write` (requests for davitd)
    opens it for appends, with the log key if the log is keyed. Neither creates a log. With
    `event_store_url_file` the log is the PostgreSQL one (davit/daemon/eventlogs.py)."""
    settings = state(ctx).settings

    async def go() -> T:
        store = await open_for_cli(settings, write)
        try:
            return await fn(store)
        finally:
            await store.close()

    return anyio.run(go)


async def load_runs(store: LogReader) -> dict[str, RunView]:
    streams: dict[str, list[ev.StoredEvent]] = {}
    async for stored in store.iter_all(stream_prefix="run-"):
        streams.setdefault(stored.stream, []).append(stored)
    return {s.removeprefix("run-"): fold(s.removeprefix("run-"), items) for s, items in streams.items()}


async def load_run(store: LogReader, run_id: str) -> RunView:
    return fold(run_id, await store.read_stream(ev.run_stream(run_id)))


async def resolve_run(store: LogReader, prefix: str) -> str:
    """The run id that `prefix` uniquely starts; a usage error otherwise (an empty prefix, as
    `"$RUN"` with RUN unset gives, starts every id and must not pick the only run there is)."""
    if not prefix:
        raise click.UsageError("RUN is empty: give a run id or a unique prefix of one")
    streams = await store.streams(f"run-{prefix}")
    ids = [s.removeprefix("run-") for s in streams]
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise click.UsageError(f"no run id starts with {prefix!r}")
    raise click.UsageError(f"{prefix!r} is ambiguous: {', '.join(ids[:5])}")


def say(line: str) -> None:
    """One line of human output whose text may come from the log, a job file or a peer: control
    and format characters are escaped so no such text can drive the terminal or forge a line."""
    click.echo(for_terminal(line))


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=True))


def table(rows: Iterable[Iterable[Any]], headers: list[str]) -> None:
    data = [[for_terminal("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in data)) if data else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in data:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def human_bytes(n: int) -> str:
    # (an amount beyond a float, from a forged log, prints as inf rather than raising OverflowError)
    value = float(n) if abs(n) < 1 << 1000 else float("inf")
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"

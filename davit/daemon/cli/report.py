"""`davit report RUN [-o FILE]`: a picture of one run (timeline, throughput, totals, warnings)
as one self-contained HTML page; `davit report --job NAME [--last N]`: the job's recent runs'
durations and sizes. Read from the log, like `davit show`; without -o the page goes to stdout.

-o FILE is written atomically (a temporary file beside it, fsynced, renamed over it) and is
private (0600), as davit's other outputs are: a report names source paths, database names and
error texts, which are the owner's business; `chmod` it to share it. A symlink at FILE is
refused rather than replaced or followed: the operator meant a file, not whatever it points at.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import click

from davit.adapters.outfile import write_atomically
from davit.daemon.cli.common import load_runs, resolve_run, with_store
from davit.daemon.report.page import run_page
from davit.daemon.report.picture import picture
from davit.daemon.report.trends import trend_rows, trends_page
from davit.domain import events as ev
from davit.domain.errors import InvalidArgument
from davit.domain.ports import LogReader


@click.command("report")
@click.argument("run", required=False)
@click.option("--job", help="Trends across this job's runs instead of one run.")
@click.option("--last", type=click.IntRange(1, 10000), default=30, show_default=True, help="With --job: how many runs.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the page here (0600) instead of stdout."
)
@click.pass_context
def command(ctx: click.Context, run: str | None, job: str | None, last: int, output: Path | None) -> None:
    """An HTML report of RUN (any unique prefix of its id), or of --job NAME's last runs."""
    if bool(run) == bool(job):
        raise click.UsageError("give RUN or --job NAME (one of them)")
    if output is not None:
        refuse_symlink(output)
    now = datetime.now(UTC)
    generated = now.isoformat(timespec="seconds")

    async def go(store: LogReader) -> str:
        if job:
            views = (await load_runs(store)).values()
            return trends_page(job, trend_rows(list(views), job, last, now), generated)
        run_id = await resolve_run(store, run or "")
        return run_page(picture(run_id, await store.read_stream(ev.run_stream(run_id)), now), generated)

    page = with_store(ctx, go)
    if output is None:
        click.echo(page, nl=False)
        return
    refuse_symlink(output)
    write_atomically(output, [page.encode("utf-8")])
    click.echo(f"report written to {output}", err=True)


def refuse_symlink(path: Path) -> None:
    """A usage error if `path` is a symlink or not a regular file. Checked before the log is read
    and again before writing; between that check and the rename a swapped-in symlink is replaced
    by the rename (rename(2) never follows the name it replaces), never written through."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise InvalidArgument("-o", f"{path}: is a symlink; davit report writes a file there, never through a symlink")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument("-o", f"{path}: is not a regular file")

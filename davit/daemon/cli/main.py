"""`davit`: the entry point and the command group. Only here do errors become exit codes:
0 success, 1 a run or check failed, 2 usage or configuration error. Commands return, or raise
a davit error that carries its exit code (see the tree in `davit/domain/errors.py`); click's own
usage errors exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from davit.daemon.cli import (
    cancel,
    check,
    daemons,
    export,
    history,
    importcmd,
    jobs,
    logcmd,
    report,
    repository,
    resume,
    run,
    runs,
    show,
    snapshots,
    status,
    validate,
    verify,
)
from davit.daemon.cli.common import CliState
from davit.daemon.config import PRIVATE_UMASK
from davit.daemon.version import davit_version
from davit.domain.errors import EXIT_USAGE, CommandFailed, DavitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), help="davitd's --home directory.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="Config file.")
@click.version_option(davit_version(), prog_name="davit")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, config_file: Path | None) -> None:
    """Read davit's history and steer its runs."""
    ctx.obj = CliState(home, config_file)


for module in (
    jobs,
    runs,
    show,
    history,
    run,
    resume,
    cancel,
    validate,
    snapshots,
    verify,
    logcmd,
    export,
    importcmd,
    repository,
    check,
    report,
    status,
    daemons,
):
    cli.add_command(module.command)


def main() -> None:
    # What davit creates (the log if davitd never ran, a repository, an export) is its owner's
    # alone, as with davitd: it may hold copies of anything backed up.
    os.umask(PRIVATE_UMASK)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_USAGE)
    except DavitError as exc:
        # a command whose own output said why (a run's state line, a check's problems) adds nothing
        if not (isinstance(exc, CommandFailed) and exc.reported):
            click.echo(f"davit: {exc}", err=True)
        sys.exit(exc.exit_code)

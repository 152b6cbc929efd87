"""`davit`: the entry point and the command group. Only here do errors become exit codes:
0 success, 1 a run or check failed, 2 usage or configuration error. Commands return, or raise
a davit error that carries its exit code (see the tree in `davit/domain/errors.py`); click's own
usage errors exit 2."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from davit.daemon.cli.common import CliState
from davit.daemon.config import PRIVATE_UMASK
from davit.daemon.version import davit_version
from davit.domain.errors import EXIT_USAGE, CommandFailed, DavitError

# Each command's module, imported only when that command runs (or help lists them): a command
# then pays for its own imports alone (export's pymongo, check's repositories, ...), which is
# most of a short command's time, and a polling script runs one every few hundred ms.
COMMANDS = {
    "jobs": "jobs",
    "runs": "runs",
    "show": "show",
    "history": "history",
    "run": "run",
    "resume": "resume",
    "cancel": "cancel",
    "validate": "validate",
    "snapshots": "snapshots",
    "verify": "verify",
    "log": "logcmd",
    "export": "export",
    "import": "importcmd",
    "repository": "repository",
    "check": "check",
    "report": "report",
    "status": "status",
    "daemons": "daemons",
}


class LazyGroup(click.Group):
    """A group whose subcommands are `COMMANDS`' modules' `command`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"davit.daemon.cli.{COMMANDS[cmd_name]}")
            command: click.Command = module.command
            assert command.name == cmd_name, (cmd_name, command.name)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), help="davitd's --home directory.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="Config file.")
@click.version_option(davit_version(), prog_name="davit")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, config_file: Path | None) -> None:
    """Read davit's history and steer its runs."""
    ctx.obj = CliState(home, config_file)


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

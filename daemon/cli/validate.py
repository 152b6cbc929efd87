"""`davit validate FILE...`: check job files without a daemon; exit 0 if all are valid, else 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from domain.errors import EXIT_OK, EXIT_USAGE, InvalidJob
from domain.jobs import parse_job


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def command(files: tuple[Path, ...]) -> None:
    """Validate job files: one `file: field: reason` line per problem."""
    ok = True
    for path in files:
        try:
            spec = parse_job(path.read_text(), str(path))
        except InvalidJob as exc:
            ok = False
            for problem in exc.problems:
                click.echo(problem.render(str(path)))
        except (OSError, UnicodeDecodeError) as exc:
            ok = False
            click.echo(f"{path}: (file): cannot read: {exc}")
        else:
            click.echo(f"{path}: valid {spec.kind} job {spec.name!r}", err=True)
    sys.exit(EXIT_OK if ok else EXIT_USAGE)

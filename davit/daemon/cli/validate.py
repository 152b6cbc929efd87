"""`davit validate FILE...`: check job files without a daemon; exit 0 if all are valid, else 2
(`JobFilesInvalid`, after one line per problem).

The verdict is davitd's: both read a file through `daemon.jobfiles.load_job_file`.
"""

from __future__ import annotations

from pathlib import Path

import click

from davit.daemon.jobfiles import load_job_file
from davit.domain.errors import JobFilesInvalid


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def command(files: tuple[Path, ...]) -> None:
    """Validate job files: one `file: field: reason` line per problem."""
    invalid: list[str] = []
    for path in files:
        # the file's own directory stands for davitd's jobs directory: a file in jobs.d gets
        # exactly davitd's verdict (the directory's mode and owner included)
        loaded = load_job_file(path, path.parent)
        if loaded.spec is None:
            invalid.append(loaded.file)
            for problem in loaded.problems:
                click.echo(problem.render(loaded.file))  # (escaped if the name is not printable)
        else:
            click.echo(f"{path}: valid {loaded.spec.kind} job {loaded.spec.name!r}", err=True)
    if invalid:
        raise JobFilesInvalid(invalid)

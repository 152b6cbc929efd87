"""`davit repository passphrase NAME`: change an encrypted repository's passphrase."""

from __future__ import annotations

from pathlib import Path

import click

from davit.adapters.repository.repository import Repository
from davit.adapters.secrets import resolve
from davit.daemon.cli.common import state
from davit.domain.errors import InvalidArgument


@click.group("repository")
def command() -> None:
    """The configured repositories."""


@command.command("passphrase")
@click.argument("name")
@click.option(
    "--new-passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="A file holding the new passphrase (never given on the command line).",
)
@click.pass_context
def passphrase(ctx: click.Context, name: str, new_passphrase_file: Path) -> None:
    """Change repository NAME's passphrase: the current one is read where the config says.

    Only the sealed key in the repository's config.json is rewritten. Afterwards point the
    repository's passphrase_file (or passphrase_env) at the new passphrase; a running davitd
    keeps working and reads the new one when it next opens the repository.
    """
    settings = state(ctx).settings
    section = settings.model.repositories.get(name)
    if section is None:
        raise InvalidArgument("NAME", f"no repository named {name!r} in the daemon config")
    if not section.encrypted:
        raise InvalidArgument("NAME", f"repository {name!r} has no passphrase_env or passphrase_file in the daemon config")
    old = resolve(section.passphrase_env, section.passphrase_file, f"repositories.{name}.passphrase")
    new = resolve(None, str(new_passphrase_file), "--new-passphrase")
    Repository.change_passphrase(settings.repositories[name], old, new)
    click.echo(f"repository {name}: passphrase changed; now point its passphrase_file or passphrase_env at the new passphrase")

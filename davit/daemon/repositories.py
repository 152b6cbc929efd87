"""Opening the configured repositories by name, with their passphrase when they have one."""

from __future__ import annotations

from davit.adapters.repository.repository import Repository
from davit.adapters.secrets import SecretUnavailable, resolve
from davit.daemon.config import Settings
from davit.domain.errors import FieldProblem, InvalidConfig


def open_repository(
    settings: Settings, name: str, *, create: bool = True, listing_only: bool = False, load_index: bool = True
) -> Repository:
    """The repository `name` of the daemon config.

    `listing_only` is for reading snapshot manifests: an encrypted repository whose passphrase
    cannot be resolved here (an operator's shell without the daemon's environment) still opens,
    and only reading its chunks or trees fails, with an error that says what is missing.
    """
    path = settings.repositories.get(name)
    section = settings.model.repositories.get(name)
    if path is None or section is None:
        raise InvalidConfig(
            str(settings.config_file), [FieldProblem(f"repositories.{name}", "no repository of this name is configured")]
        )
    passphrase = None
    if section.encrypted:
        try:
            passphrase = resolve(section.passphrase_env, section.passphrase_file, f"repositories.{name}.passphrase")
        except SecretUnavailable:
            if not listing_only:
                raise
    return Repository.open(
        path, settings.model.data_path.compression_level, create=create, passphrase=passphrase, load_index=load_index
    )

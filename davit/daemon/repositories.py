"""Opening the configured repositories by name, with their passphrase when they have one.

Every command and davitd turn a configured name into a `Repository` here, from its location
(`Settings.locations`: a local directory, or an `sftp://` / `s3://` url). This is the one
place that knows how: the repository still works on a local directory, so a remote location
is refused here, with its name, until the repository runs on its backend.
"""

from __future__ import annotations

from pathlib import Path

from davit.adapters.repository.backend import Backend
from davit.adapters.repository.backends.factory import open_backend
from davit.adapters.repository.location import RepositoryLocation
from davit.adapters.repository.repository import Repository
from davit.adapters.secrets import SecretUnavailable, resolve
from davit.daemon.config import Settings
from davit.domain.errors import FieldProblem, InvalidArgument, InvalidConfig, PermanentError

CONFIG_KEY = "config.json"  # a repository exists once this object does


def location_of(settings: Settings, name: str) -> RepositoryLocation:
    """The configured location of repository `name`; `InvalidConfig` if there is none."""
    location = settings.locations.get(name)
    if location is None or name not in settings.model.repositories:
        raise InvalidConfig(
            str(settings.config_file), [FieldProblem(f"repositories.{name}", "no repository of this name is configured")]
        )
    return location


def _root(location: RepositoryLocation) -> Path:
    if location.path is None:
        raise PermanentError(
            f"repository {location.name} ({location.where}): {location.scheme}:// repositories cannot be read or "
            "written by this davit yet (only their configuration is checked)"
        )
    return location.path


def _backend(location: RepositoryLocation) -> Backend:
    """The location's backend (one declared backup-only knows it: `delete = false`)."""
    _root(location)
    return open_backend(location)


def configured_passphrase(settings: Settings, name: str) -> str | None:
    """The passphrase the config names for `name` (None if it names none); `SecretUnavailable`
    if it names one that cannot be read here."""
    section = settings.model.repositories[name]
    if not section.encrypted:
        return None
    return resolve(section.passphrase_env, section.passphrase_file, f"repositories.{name}.passphrase")


def open_repository(
    settings: Settings, name: str, *, create: bool = True, listing_only: bool = False, load_index: bool = True
) -> Repository:
    """The repository `name` of the daemon config.

    `listing_only` is for reading snapshot manifests: an encrypted repository whose passphrase
    cannot be resolved here (an operator's shell without the daemon's environment) still opens,
    and only reading its chunks or trees fails, with an error that says what is missing.
    """
    location = location_of(settings, name)
    try:
        passphrase = configured_passphrase(settings, name)
    except SecretUnavailable:
        if not listing_only:
            raise
        passphrase = None
    level = settings.model.data_path.compression_level
    return Repository.open(_backend(location), level, create=create, passphrase=passphrase, load_index=load_index)


def repository_exists(settings: Settings, name: str) -> bool:
    """Whether repository `name` has been created (its config object exists); nothing is created."""
    backend = open_backend(location_of(settings, name))
    try:
        return backend.stat(CONFIG_KEY) is not None
    finally:
        backend.close()


def existing_repositories(settings: Settings) -> list[str]:
    """The names of the configured repositories that exist and this davit can open."""
    return [name for name, loc in settings.locations.items() if loc.path is not None and repository_exists(settings, name)]


def init_repository(settings: Settings, name: str, passphrase: str | None) -> Repository:
    """Create repository `name`, encrypted under `passphrase` if one is given; `InvalidArgument`
    if it exists already (it is left untouched)."""
    location = location_of(settings, name)
    if repository_exists(settings, name):
        raise InvalidArgument("NAME", f"repository {name} already exists at {location.where}; nothing was changed")
    return Repository.open(_backend(location), settings.model.data_path.compression_level, create=True, passphrase=passphrase)


def change_passphrase(settings: Settings, name: str, old: str, new: str) -> None:
    """Seal repository `name`'s key under `new` instead of `old`."""
    Repository.change_passphrase(_root(location_of(settings, name)), old, new)

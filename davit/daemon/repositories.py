"""Opening the configured repositories by name, with their passphrase when they have one.

Every command and davitd turn a configured name into a `Repository` here, from its location
(`Settings.locations`: a local directory, or an `sftp://` / `s3://` url): this is the one
place that knows how.

A remote repository keeps this host's files of it (the staged trees of backup runs in progress,
spooled packs and trees) in `<state_dir>/repositories/<name>/` (`local_dir`, 0700), the same
directory for davitd and for the CLI run on the same home (its `cache/` of indexes and trees
too). Sharing it at once is safe: spool files have random names, cache files appear by rename,
and staging belongs to davitd's runs (only davitd, from its own log, removes any; the CLI never
does). Nothing in it is needed to read the repository: a lost state directory costs downloads
and the resume of the runs in progress (their staged lines are also on the server, as segments).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from davit.adapters.repository.backend import Backend
from davit.adapters.repository.backends.factory import open_backend
from davit.adapters.repository.chunking import Chunking
from davit.adapters.repository.fsutil import make_dirs
from davit.adapters.repository.location import RepositoryLocation
from davit.adapters.repository.repository import Repository
from davit.adapters.secrets import SecretUnavailable, resolve
from davit.daemon.config import Settings
from davit.domain.errors import DavitError, FieldProblem, InvalidArgument, InvalidConfig

CONFIG_KEY = "config.json"  # a repository exists once this object does
REMOTE_STATE = "repositories"  # under davitd's state directory: remote repositories' local files
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def location_of(settings: Settings, name: str) -> RepositoryLocation:
    """The configured location of repository `name`; `InvalidConfig` if there is none."""
    location = settings.locations.get(name)
    if location is None or name not in settings.model.repositories:
        raise InvalidConfig(
            str(settings.config_file), [FieldProblem(f"repositories.{name}", "no repository of this name is configured")]
        )
    return location


def local_dir(settings: Settings, name: str) -> Path:
    """This host's directory for remote repository `name` (not created here). A name that is not
    a plain file name (TOML allows `"../x"` as a key) gets a digest of it instead, so no
    configured name can point the directory elsewhere."""
    plain = name if _PLAIN_NAME.match(name) else f"x-{hashlib.sha256(name.encode()).hexdigest()[:24]}"
    return settings.state_dir / REMOTE_STATE / plain


def _open_at(settings: Settings, location: RepositoryLocation) -> tuple[Backend, Path | None]:
    """What `Repository.open` takes for `location`: its backend (one declared backup-only knows
    it: `delete = false`), and for a remote one this host's directory for it (created 0700)."""
    if location.path is not None:
        return open_backend(location), None
    home = local_dir(settings, location.name)
    make_dirs(home)
    return open_backend(location), home


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
    """The repository `name` of the daemon config; close it when done (a remote one holds a
    connection).

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
    where, home = _open_at(settings, location)
    try:
        return Repository.open(
            where,
            settings.model.data_path.compression_level,
            create=create,
            chunking=Chunking.around(settings.model.data_path.chunk_size_kib << 10),
            passphrase=passphrase,
            local_dir=home,
            load_index=load_index,
        )
    except BaseException:
        where.close()
        raise


def repository_exists(settings: Settings, name: str) -> bool:
    """Whether repository `name` has been created (its config object exists); nothing is created.
    A remote one that cannot be reached raises `BackendUnavailable`; a missing bucket or SFTP
    directory, or refused credentials, `BackendDenied` naming the repository."""
    location = location_of(settings, name)
    backend = open_backend(location)
    try:
        if backend.stat(CONFIG_KEY) is not None:
            return True
        if location.path is None:
            # S3 answers a HEAD in a missing bucket with a bare 404, like a missing object, and
            # some servers (SeaweedFS) create a bucket on the first PUT: a listing says which
            for _ in backend.list("locks/"):
                break
        return False
    finally:
        backend.close()


def existing_repositories(settings: Settings, unusable: Callable[[str, DavitError], None] | None = None) -> list[str]:
    """The names of the configured repositories that exist (a remote one is asked). With
    `unusable`, a repository that cannot be asked (a server down, refused credentials, a key
    this process cannot read) is handed to it and left out, so the others are still listed;
    without, its error is raised."""
    found = []
    for name in settings.locations:
        try:
            if repository_exists(settings, name):
                found.append(name)
        except DavitError as exc:
            if unusable is None:
                raise
            unusable(name, exc)
    return found


def init_repository(settings: Settings, name: str, passphrase: str | None) -> Repository:
    """Create repository `name`, encrypted under `passphrase` if one is given; `InvalidArgument`
    if it exists already (it is left untouched). A remote one needs its bucket or SFTP directory
    to exist (`BackendDenied` says which is missing): davit creates objects, not buckets."""
    location = location_of(settings, name)
    if repository_exists(settings, name):
        raise InvalidArgument("NAME", f"repository {name} already exists at {location.where}; nothing was changed")
    where, home = _open_at(settings, location)
    try:
        return Repository.open(
            where,
            settings.model.data_path.compression_level,
            create=True,
            passphrase=passphrase,
            local_dir=home,
            chunking=Chunking.around(settings.model.data_path.chunk_size_kib << 10),
        )
    except BaseException:
        where.close()
        raise


def change_passphrase(settings: Settings, name: str, old: str, new: str) -> None:
    """Seal repository `name`'s key under `new` instead of `old`."""
    backend = open_backend(location_of(settings, name))
    try:
        Repository.change_passphrase(backend, old, new)
    finally:
        backend.close()

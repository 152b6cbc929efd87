"""The backend of a configured repository: a local directory, SFTP or S3 (`location.py`).

The remote backends are imported only when a location asks for one, so a davit that only
ever uses local repositories never loads asyncssh or obstore. Secrets (S3 keys) are resolved
here, at open, from the references the location holds, and go nowhere but the backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from davit.adapters.repository.backend import Backend
from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.location import RepositoryLocation, SecretRef
from davit.adapters.secrets import resolve

SecretResolver = Callable[[SecretRef], str]


def resolve_ref(ref: SecretRef) -> str:
    """The secret `ref` names (`SecretUnavailable` naming where it was looked for, never its value)."""
    return resolve(ref.env, ref.file, ref.what)


def open_backend(location: RepositoryLocation, secret: SecretResolver = resolve_ref) -> Backend:
    """A backend for `location`; nothing is created on the server."""
    if location.path is not None:
        return LocalBackend(location.path)
    if location.sftp is not None and location.url is not None:
        sftp = importlib.import_module("davit.adapters.repository.backends.sftp")
        return cast(
            Backend,
            sftp.SftpBackend(
                location.url,
                known_hosts=location.sftp.known_hosts,
                identity_file=location.sftp.identity_file,
                retry_budget=location.retry_seconds,
            ),
        )
    if location.s3 is not None and location.url is not None:
        s3 = importlib.import_module("davit.adapters.repository.backends.s3")
        opts = location.s3
        return cast(
            Backend,
            s3.S3Backend.from_url(
                location.url,
                endpoint=opts.endpoint,
                region=opts.region,
                path_style=opts.path_style,
                access_key_id=secret(opts.access_key_id),
                secret_access_key=secret(opts.secret_access_key),
                retry_budget=location.retry_seconds,
            ),
        )
    raise ValueError(f"repository {location.name}: no backend for {location.where!r}")

"""Where a configured repository lives: a local directory, an SFTP server or an S3 bucket.

The daemon's config (`daemon/config.py`) validates a `[repositories.NAME]` section and turns
it into a `RepositoryLocation`; `backends/factory.py` turns a location into a `Backend`. The
location holds only references to secrets (`SecretRef`: an environment variable or a file),
never a secret: it is compared on reload and may end up in messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from davit.domain.redaction import strip_uri_credentials


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: exactly one of `env` or `file`. `what` names it in messages
    (`repositories.offsite.secret_access_key`)."""

    env: str | None
    file: str | None
    what: str


@dataclass(frozen=True)
class SftpOptions:
    known_hosts: Path  # the server's host key must be in it: nothing is accepted on first use
    identity_file: Path  # the private key davitd logs in with (no password logins)


@dataclass(frozen=True)
class S3Options:
    endpoint: str | None  # None: AWS itself
    region: str
    path_style: bool  # `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO, SeaweedFS)
    access_key_id: SecretRef
    secret_access_key: SecretRef


@dataclass(frozen=True)
class RepositoryLocation:
    """One repository: `path` for a local one, else `url` with the options of its scheme."""

    name: str
    path: Path | None = None
    url: str | None = None
    sftp: SftpOptions | None = None
    s3: S3Options | None = None
    # how long a remote backend retries one operation before `BackendUnavailable`
    retry_seconds: float = 60.0

    @property
    def scheme(self) -> str:
        return "file" if self.path is not None else (self.url or "").partition("://")[0]

    @property
    def where(self) -> str:
        """The repository for messages: its directory or its URL (which never holds a password:
        the config refuses one, and this strips it anyway)."""
        return str(self.path) if self.path is not None else strip_uri_credentials(self.url or "")

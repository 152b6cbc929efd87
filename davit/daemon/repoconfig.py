"""The `[repositories.NAME]` sections of the daemon config, and the locations they name.

A section gives exactly one of `path` (a local directory) or `url`:
- `sftp://USER@HOST[:PORT]/PATH` with `known_hosts` and `identity_file` (files; relative
  names are read against the config file's directory). A password in the URL is refused:
  davitd logs in with a key, and the URL appears in messages.
- `s3://BUCKET[/PREFIX]` with `endpoint` (optional), `region` (default us-east-1),
  `path_style`, and the keys by reference only: one of `access_key_id_env` /
  `access_key_id_file` and one of `secret_access_key_env` / `secret_access_key_file`.
Both remote kinds take `retry_seconds` (default 60): how long an operation retries a server
that does not answer before the run fails as retryable.
A key written into the file (`secret_access_key = "..."`) is refused by name, without its
value in the message. Every problem names its field (`repositories.NAME.FIELD`) and reason;
`read_config` adds the file.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from davit.adapters.repository.location import RepositoryLocation, S3Options, SecretRef, SftpOptions
from davit.domain.errors import FieldProblem

DEFAULT_REGION = "us-east-1"
# a server restart of half a minute does not fail a run (plan17.md §2 note d)
DEFAULT_RETRY_SECONDS = 60.0
SFTP_FIELDS = ("known_hosts", "identity_file")
S3_FIELDS = (
    "endpoint",
    "region",
    "path_style",
    "access_key_id_env",
    "access_key_id_file",
    "secret_access_key_env",
    "secret_access_key_file",
)
# a DNS-compatible bucket name, as S3 requires of new buckets
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_INLINE_REASONS = {
    "access_key_id": "keys are never written in the config: use access_key_id_env or access_key_id_file",
    "secret_access_key": "keys are never written in the config: use secret_access_key_env or secret_access_key_file",
    "password": "no password is used: an sftp:// repository logs in with identity_file, an s3:// one with its keys",
    "passphrase": "secrets are never written in the config: use passphrase_env or passphrase_file",
}


class RepositorySection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    url: str | None = None
    # sftp://
    known_hosts: str | None = None
    identity_file: str | None = None
    # s3://
    endpoint: str | None = None
    region: str | None = None
    path_style: bool | None = None
    access_key_id_env: str | None = None
    access_key_id_file: str | None = None
    secret_access_key_env: str | None = None
    secret_access_key_file: str | None = None
    # sftp:// and s3://: how long one operation keeps retrying a server that does not answer
    # before the run fails as retryable (it resumes later from its last checkpoint)
    retry_seconds: float | None = Field(default=None, gt=0, le=3600)
    # An encrypted repository's passphrase, by reference only (never inline). Given when the
    # repository is created, it makes the repository encrypted (AES-256-GCM); an existing
    # encrypted repository needs it for every read and write of chunks and trees.
    passphrase_env: str | None = None
    passphrase_file: str | None = None
    # Secrets written inline: accepted by the parser only to be refused with a clear reason
    # (as unknown fields they would read "unknown field"); never stored, never echoed.
    access_key_id: Any = Field(default=None, exclude=True, repr=False)
    secret_access_key: Any = Field(default=None, exclude=True, repr=False)
    password: Any = Field(default=None, exclude=True, repr=False)
    passphrase: Any = Field(default=None, exclude=True, repr=False)

    @field_validator("access_key_id", "secret_access_key", "password", "passphrase", mode="before")
    @classmethod
    def _refuse_inline(cls, value: Any, info: ValidationInfo) -> Any:
        raise ValueError(_INLINE_REASONS[info.field_name or ""])

    @model_validator(mode="after")
    def _one_reference(self) -> RepositorySection:
        if self.passphrase_env is not None and self.passphrase_file is not None:
            raise ValueError("give passphrase_env or passphrase_file, not both")
        return self

    @property
    def encrypted(self) -> bool:
        return self.passphrase_env is not None or self.passphrase_file is not None

    def problems(self, base: Path) -> list[FieldProblem]:
        """What is wrong with the section beyond its fields' types (field names relative to it);
        `base` is the config file's directory, against which relative file names are read."""
        if (self.path is None) == (self.url is None):
            return [FieldProblem("path", "give exactly one of path (a local directory) or url (sftp://... or s3://...)")]
        if self.path is not None:
            return self._foreign((*SFTP_FIELDS, *S3_FIELDS, "retry_seconds"), "only for a repository given by url")
        url = self.url or ""
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme == "sftp":
            return self._foreign(S3_FIELDS, "only for an s3:// url") + self._sftp_problems(base)
        if scheme == "s3":
            return self._foreign(SFTP_FIELDS, "only for an sftp:// url") + self._s3_problems()
        return [FieldProblem("url", "not a repository URL: give sftp://USER@HOST[:PORT]/PATH or s3://BUCKET[/PREFIX]")]

    def _foreign(self, fields: tuple[str, ...], reason: str) -> list[FieldProblem]:
        return [FieldProblem(name, reason) for name in fields if getattr(self, name) is not None]

    def _sftp_problems(self, base: Path) -> list[FieldProblem]:
        problems = [FieldProblem("url", reason) for reason in sftp_url_problems(self.url or "")]
        for name in SFTP_FIELDS:
            value = getattr(self, name)
            reason = "required for an sftp:// url" if value is None else file_problem(resolve_path(base, value))
            if reason:
                problems.append(FieldProblem(name, reason))
        return problems

    def _s3_problems(self) -> list[FieldProblem]:
        problems = [FieldProblem("url", reason) for reason in s3_url_problems(self.url or "")]
        if self.endpoint is not None:
            problems += [FieldProblem("endpoint", reason) for reason in endpoint_problems(self.endpoint)]
        if self.region is not None and not _REGION.match(self.region):
            problems.append(FieldProblem("region", "not a region name (lower-case letters, digits and '-', e.g. us-east-1)"))
        for key in ("access_key_id", "secret_access_key"):
            env, file = getattr(self, f"{key}_env"), getattr(self, f"{key}_file")
            if env is None and file is None:
                problems.append(FieldProblem(f"{key}_env", f"required for an s3:// url: give {key}_env or {key}_file"))
            elif env is not None and file is not None:
                problems.append(FieldProblem(f"{key}_env", f"give {key}_env or {key}_file, not both"))
        return problems

    def location(self, name: str, state_root: Path, base: Path) -> RepositoryLocation:
        """The location of a section without `problems`: relative `path` against the state
        root, relative file names against the config file's directory `base`."""
        if self.path is not None:
            return RepositoryLocation(name, path=resolve_path(state_root, self.path))
        url = self.url or ""
        if url.lower().startswith("sftp://"):
            sftp = SftpOptions(resolve_path(base, self.known_hosts or ""), resolve_path(base, self.identity_file or ""))
            return RepositoryLocation(name, url=url, sftp=sftp, retry_seconds=self.retry_seconds or DEFAULT_RETRY_SECONDS)
        s3 = S3Options(
            endpoint=self.endpoint,
            region=self.region or DEFAULT_REGION,
            path_style=bool(self.path_style),
            access_key_id=self._secret(name, "access_key_id", base),
            secret_access_key=self._secret(name, "secret_access_key", base),
        )
        return RepositoryLocation(name, url=url, s3=s3, retry_seconds=self.retry_seconds or DEFAULT_RETRY_SECONDS)

    def _secret(self, name: str, key: str, base: Path) -> SecretRef:
        file = getattr(self, f"{key}_file")
        return SecretRef(
            getattr(self, f"{key}_env"), str(resolve_path(base, file)) if file else None, f"repositories.{name}.{key}"
        )


def resolve_path(root: Path, value: str) -> Path:
    return Path(value) if value.startswith("/") else root / value


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be the file a field names, or None. A file davitd may read but this
    process may not stat is let through: opening the repository says what is wrong then."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"no such file: {path}"
    except NotADirectoryError:
        return f"no such file: {path}"
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else f"not a regular file: {path}"


def _split(url: str) -> SplitResult | str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    return parts


def sftp_url_problems(url: str) -> list[str]:
    parts = _split(url)
    if isinstance(parts, str):
        return [parts]
    if parts.password is not None:
        return ["holds a password, but davitd logs in with identity_file: remove the password from the URL"]
    problems = []
    if not parts.username:
        problems.append("give the user to log in as: sftp://USER@HOST[:PORT]/PATH")
    if not parts.hostname:
        problems.append("give the server: sftp://USER@HOST[:PORT]/PATH")
    if parts.path.strip("/") == "":
        problems.append("give the repository's directory on the server: sftp://USER@HOST[:PORT]/PATH")
    if ".." in parts.path.split("/"):
        problems.append("the path may not contain '..'")
    if parts.query or parts.fragment:
        problems.append("an sftp:// URL takes no query or fragment")
    return problems


def s3_url_problems(url: str) -> list[str]:
    parts = _split(url)
    if isinstance(parts, str):
        return [parts]
    if "@" in parts.netloc:
        return ["an s3:// URL holds no credentials: give access_key_id_env/_file and secret_access_key_env/_file"]
    problems = []
    if parts.port is not None or not _BUCKET.match(parts.netloc):
        problems.append("give a bucket name (3-63 lower-case letters, digits, '.' and '-'): s3://BUCKET[/PREFIX]")
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        problems.append("the prefix may not contain empty, '.' or '..' segments")
    if parts.query or parts.fragment:
        problems.append("an s3:// URL takes no query or fragment (endpoint, region and path_style are fields of their own)")
    return problems


def endpoint_problems(endpoint: str) -> list[str]:
    parts = _split(endpoint)
    if isinstance(parts, str):
        return [parts]
    if parts.username is not None or parts.password is not None:
        return ["holds credentials: give the keys by access_key_id_env/_file and secret_access_key_env/_file"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ["not an endpoint URL: give http(s)://HOST[:PORT]"]
    return []

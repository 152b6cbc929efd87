"""Job specs of the PostgreSQL kinds: `postgres.backup` and `postgres.restore`.

The server is named by reference only: `host`, `port`, `user` and the password as
`password_file` or `password_env` (or none, for a server that trusts the connection), or the
whole libpq connection string in `dsn_file` (it may carry the password). Tables are selected
with shell-style patterns (`*`, `?`, `[...]`) over `DB.SCHEMA.TABLE`; `schema_only` patterns
keep a table's definition without its rows, `data_only` ones its rows without its definition
(the target is expected to have the table). The patterns are checked here so that a bad one is
reported with the job file rather than at run time.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import Field, field_validator, model_validator

from davit.domain.jobs.base import JobBase, Retention, SnapshotRef, Spec, absolute_path, distinct_renames

IDENTIFIER_MAX = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names


def table_patterns(values: list[str]) -> list[str]:
    """`DB.SCHEMA.TABLE` patterns: three dot-separated parts, none empty, no control characters."""
    for value in values:
        parts = value.split(".")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{value!r} is not a DB.SCHEMA.TABLE pattern (e.g. shop.public.orders or shop.*.*)")
        if any(ord(c) < 32 for c in value):
            raise ValueError(f"{value!r} holds a control character")
    return values


def matches(name: str, patterns: list[str]) -> bool:
    """Does the qualified name `DB.SCHEMA.TABLE` match one of `patterns` (case-sensitive)?"""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def select_tables(names: list[str], include: list[str], exclude: list[str]) -> list[str]:
    """The names `include` keeps (all when empty) and `exclude` does not drop, in order."""
    return [n for n in names if (not include or matches(n, include)) and not matches(n, exclude)]


def _database_name(value: str) -> str:
    if not value or len(value.encode()) > IDENTIFIER_MAX or "\x00" in value:
        raise ValueError(f"{value!r} is not a PostgreSQL database name (1 to {IDENTIFIER_MAX} bytes)")
    return value


class PostgresServer(Spec):
    host: str | None = None  # a host name, an address, or a directory holding the unix socket
    port: int = Field(default=5432, ge=1, le=65535)
    user: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    dsn_file: str | None = None  # a libpq connection string or URI in a file (may hold the password)
    maintenance_db: str = "postgres"  # where davit connects to list and create databases

    _absolute = field_validator("password_file", "dsn_file")(lambda v: v if v is None else absolute_path(v))

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> PostgresServer:
        if self.dsn_file is not None:
            if self.host is not None or self.user is not None or self.password_file or self.password_env:
                raise ValueError("give either dsn_file or host/user/password_*, not both")
        elif self.host is None or self.user is None:
            raise ValueError("give host and user (with password_file or password_env), or dsn_file")
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give at most one of password_file or password_env")
        return self


class PostgresBackupSource(PostgresServer):
    databases: list[str] = Field(default_factory=list)  # empty: every database but the templates
    include: list[str] = Field(default_factory=list)  # DB.SCHEMA.TABLE patterns; empty: every table
    exclude: list[str] = Field(default_factory=list)
    schema_only: list[str] = Field(default_factory=list)  # these tables' definitions, not their rows
    data_only: list[str] = Field(default_factory=list)  # these tables' rows, not their definitions

    _patterns = field_validator("include", "exclude", "schema_only", "data_only")(table_patterns)
    _names = field_validator("databases")(lambda v: [_database_name(n) for n in v])


class PostgresBackupJob(JobBase):
    kind: Literal["postgres.backup"]
    source: PostgresBackupSource
    retention: Retention = Field(default_factory=Retention)
    roles: bool = False  # also the cluster's roles: attributes, password hashes, memberships (superuser for hashes)
    parallel: int = Field(default=2, ge=1, le=16)  # tables dumped at once


class PostgresRestoreTarget(PostgresServer):
    databases: list[str] = Field(default_factory=list)  # which of the snapshot's databases; empty: all
    rename: dict[str, str] = Field(default_factory=dict)  # source database -> target database
    if_exists: Literal["fail", "drop", "merge"] = "fail"  # what to do with a target database that exists
    include: list[str] = Field(default_factory=list)  # tables whose rows are restored (source names)
    exclude: list[str] = Field(default_factory=list)

    _patterns = field_validator("include", "exclude")(table_patterns)
    _names = field_validator("databases")(lambda v: [_database_name(n) for n in v])

    @field_validator("rename")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        return distinct_renames(value, _database_name)


class PostgresRestoreJob(JobBase):
    kind: Literal["postgres.restore"]
    source: SnapshotRef
    target: PostgresRestoreTarget
    roles: bool = False  # create the snapshot's roles first (existing ones are kept), owners and database grants
    replace_role_passwords: bool = False  # with roles: also set the snapshot's password hash on roles that exist
    # "skip": no owner and no GRANT/REVOKE of the snapshot is applied (pg_restore --no-owner
    # --no-privileges): everything belongs to the restoring user, for a cluster lacking the roles
    privileges: Literal["keep", "skip"] = "keep"
    parallel: int = Field(default=2, ge=1, le=16)  # tables loaded at once

    @model_validator(mode="after")
    def _passwords_need_roles(self) -> PostgresRestoreJob:
        if self.replace_role_passwords and not self.roles:
            raise ValueError("replace_role_passwords needs roles = true")
        if self.privileges == "skip" and self.roles:
            raise ValueError("privileges = 'skip' leaves the snapshot's owners and grants out: it needs roles = false")
        return self

"""Job specs of the MariaDB/MySQL kinds: `mysql.backup` and `mysql.restore`.

The server is named by reference only: `host`, `port`, `user` and the password as a file
(`password_file`) or an environment variable (`password_env`), or all of it in a client
option file (`defaults_file`, the `[client]` group of a my.cnf). Tables are named `db.table`
and selected with the same patterns as MongoDB namespaces (`davit/domain/namespaces.py`: `*`
matches any run of characters, `\\*` a literal star); the patterns are checked here, so a bad
one is reported with the job file.

Backup: `databases` (empty: every database but the server's own), `include`/`exclude` table
patterns, `schema_only` (tables whose definition is kept but not their rows) and `data_only`
(rows kept, the restore expects the table to exist), `users` (accounts and grants, opt-in).
Restore: `rename` maps a snapshot's database to a target database, `if_exists` says what
happens to a target database that exists (`fail`, `drop` it first, or `merge`: tables of the
snapshot are replaced, other tables are left alone), `include`/`exclude` select tables.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from davit.domain.jobs.base import JobBase, Retention, SnapshotRef, Spec, absolute_path, distinct_renames
from davit.domain.namespaces import PatternError, check_pattern

# The server's own databases: never backed up unless named in `databases`.
SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")
_NAME_LIMIT = 64  # MariaDB's identifier length


def _patterns(values: list[str]) -> list[str]:
    for value in values:
        try:
            check_pattern(value)
        except PatternError as exc:
            raise ValueError(str(exc)) from exc
        if "." not in value:
            raise ValueError(f"{value!r} is not a table pattern of the form DB.TABLE (e.g. shop.* or shop.order*)")
    return values


def _database_name(value: str) -> str:
    if not value or len(value) > _NAME_LIMIT or value != value.rstrip() or "/" in value or "\x00" in value:
        raise ValueError(f"{value!r} is not a database name (1-64 characters, no '/', no trailing space)")
    return value


class MysqlServer(Spec):
    host: str = "127.0.0.1"
    port: int = Field(default=3306, ge=1, le=65535)
    user: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    defaults_file: str | None = None  # a my.cnf whose [client] group gives user/password (and host/port)

    _absolute = field_validator("password_file", "defaults_file")(lambda v: v if v is None else absolute_path(v))

    @model_validator(mode="after")
    def _credentials_by_reference(self) -> MysqlServer:
        if self.defaults_file is not None:
            if self.password_file is not None or self.password_env is not None:
                raise ValueError("give the password in defaults_file or as password_file/password_env, not both")
            return self
        if self.user is None:
            raise ValueError("give user (with password_file or password_env), or a defaults_file")
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_file or password_env")
        return self


class MysqlBackupSource(MysqlServer):
    databases: list[str] = Field(default_factory=list)  # empty: every database but SYSTEM_DATABASES
    include: list[str] = Field(default_factory=list)  # DB.TABLE patterns; empty: all
    exclude: list[str] = Field(default_factory=list)
    schema_only: list[str] = Field(default_factory=list)  # tables whose rows are not kept
    data_only: list[str] = Field(default_factory=list)  # tables whose definition is not kept
    users: bool = False  # accounts (CREATE USER, password hashes) and their grants

    _names = field_validator("databases")(lambda v: [_database_name(d) for d in v])
    _checked = field_validator("include", "exclude", "schema_only", "data_only")(_patterns)


class MysqlBackupJob(JobBase):
    kind: Literal["mysql.backup"]
    source: MysqlBackupSource
    retention: Retention = Field(default_factory=Retention)
    parallel: int = Field(default=2, ge=1, le=16)  # tables dumped at once, all from one consistent point
    chunk_kib: int = Field(default=1024, ge=16, le=8192)  # about this much SQL per stored chunk (whole rows; one INSERT)


class MysqlRestoreTarget(MysqlServer):
    rename: dict[str, str] = Field(default_factory=dict)  # snapshot database -> target database
    if_exists: Literal["fail", "drop", "merge"] = "fail"
    include: list[str] = Field(default_factory=list)  # DB.TABLE patterns, as named in the snapshot
    exclude: list[str] = Field(default_factory=list)
    users: bool = False  # also restore the snapshot's accounts and grants (first)
    # "skip": views, routines, triggers and events are created without their DEFINER (they run as
    # the restoring account), for a server that lacks the snapshot's accounts
    privileges: Literal["keep", "skip"] = "keep"

    _checked = field_validator("include", "exclude")(_patterns)

    @model_validator(mode="after")
    def _skip_without_users(self) -> MysqlRestoreTarget:
        if self.privileges == "skip" and self.users:
            raise ValueError("privileges = 'skip' leaves the snapshot's accounts out: it needs users = false")
        return self

    @field_validator("rename")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        return distinct_renames(value, _database_name)


class MysqlRestoreJob(JobBase):
    kind: Literal["mysql.restore"]
    source: SnapshotRef
    target: MysqlRestoreTarget
    parallel: int = Field(default=2, ge=1, le=16)  # tables loaded at once

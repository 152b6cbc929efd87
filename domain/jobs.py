"""Job specs: what a job file declares, as pydantic models discriminated by `kind`.

A job file is TOML read with the standard library. Parsing lives here because it is pure:
the caller hands in the file's text and its name, and gets a spec or an `InvalidJob` that
names the file, the field and the reason. Secrets are declared by reference only
(`*_env`, `*_file`); an inline secret is refused with a message saying how to refer to it.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from domain.errors import FieldProblem, InvalidJob

JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
INLINE_SECRET_KEYS = frozenset({"password", "uri", "url", "api_key", "key", "token", "secret"})


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retention(Spec):
    """Which snapshots of a job to keep after a successful backup; the union is kept."""

    keep_last: int | None = Field(default=None, ge=1)
    keep_daily: int | None = Field(default=None, ge=1)
    keep_weekly: int | None = Field(default=None, ge=1)
    keep_monthly: int | None = Field(default=None, ge=1)

    def is_empty(self) -> bool:
        return all(
            v is None for v in (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)
        )


class JobBase(Spec):
    name: str = Field(pattern=JOB_NAME_PATTERN)
    schedule: str | None = None
    repository: str = "local"

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 3 * * *')")
        return value


class FilesBackupSource(Spec):
    path: str
    exclude: list[str] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class FilesBackupJob(JobBase):
    kind: Literal["files.backup"]
    source: FilesBackupSource
    retention: Retention = Field(default_factory=Retention)


class SnapshotRef(Spec):
    """`latest` of a job, or one snapshot by id (a unique prefix is enough)."""

    job: str | None = Field(default=None, pattern=JOB_NAME_PATTERN)
    snapshot: str = "latest"

    @model_validator(mode="after")
    def _latest_needs_job(self) -> SnapshotRef:
        if self.snapshot == "latest" and self.job is None:
            raise ValueError("snapshot = 'latest' needs the job whose latest snapshot to use")
        return self


class FilesRestoreTarget(Spec):
    path: str
    overwrite: bool = False

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class FilesRestoreJob(JobBase):
    kind: Literal["files.restore"]
    source: SnapshotRef
    target: FilesRestoreTarget


JobSpec = Annotated[FilesBackupJob | FilesRestoreJob, Field(discriminator="kind")]
KINDS: tuple[str, ...] = ("files.backup", "files.restore")
BACKUP_KINDS: frozenset[str] = frozenset({"files.backup"})

_job_adapter: TypeAdapter[FilesBackupJob | FilesRestoreJob] = TypeAdapter(JobSpec)


def parse_job(text: str, file: str) -> FilesBackupJob | FilesRestoreJob:
    """Parse a job file's text; raise `InvalidJob` naming file, field and reason."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidJob(file, [FieldProblem("(toml)", str(exc))]) from exc
    return job_from_dict(raw, file)


def job_from_dict(raw: dict[str, Any], file: str) -> FilesBackupJob | FilesRestoreJob:
    problems = _precheck(raw)
    if problems:
        raise InvalidJob(file, problems)
    try:
        return _job_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidJob(file, problems_from_validation(exc, skip_leading=1)) from exc


def _precheck(raw: dict[str, Any]) -> list[FieldProblem]:
    kind = raw.get("kind")
    if kind is None:
        return [FieldProblem("kind", f"missing; expected one of {', '.join(KINDS)}")]
    if kind not in KINDS:
        return [FieldProblem("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")]
    return list(_inline_secrets(raw, ""))


def _inline_secrets(node: dict[str, Any], prefix: str) -> list[FieldProblem]:
    found = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _inline_secrets(value, path + ".")
        elif key in INLINE_SECRET_KEYS and isinstance(value, str):
            found.append(
                FieldProblem(
                    path,
                    f"secrets are never written inline; use {key}_env (an environment "
                    f"variable) or {key}_file (a file) instead",
                )
            )
    return found


def problems_from_validation(exc: ValidationError, skip_leading: int = 0) -> list[FieldProblem]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]][skip_leading:]
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        elif err["type"] == "missing":
            reason = "required field is missing"
        problems.append(FieldProblem(".".join(loc) or "(job)", reason))
    return problems


def spec_revision(spec: BaseModel) -> str:
    """A job's revision: the hash of its normalised spec, so comments and layout don't count."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def spec_from_json(data: dict[str, Any]) -> FilesBackupJob | FilesRestoreJob:
    """Re-read a spec recorded in an event (it was valid when recorded)."""
    return _job_adapter.validate_python(data)


AnyJob = FilesBackupJob | FilesRestoreJob

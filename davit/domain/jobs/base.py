"""What every job spec shares: the base model, retention, snapshot references, secret
references, and turning pydantic's errors into (field, reason) problems.

Secrets are declared by reference only: a `SecretRef` names an environment variable (`*_env`)
or a file (`*_file`), never the value; resolving it is the adapters' business, at run time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from davit.domain.durations import parse_duration
from davit.domain.errors import FieldProblem
from davit.domain.notifyspec import JobNotify
from davit.domain.redaction import has_uri_password

JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
DAEMON_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # `[daemon] name`, a job's `runs_on`
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
        return all(v is None for v in (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly))


_A_LEAP_YEAR = datetime(2000, 1, 1, tzinfo=UTC)  # a fixed start: the verdict must not depend on the date


class JobBase(Spec):
    name: str = Field(pattern=JOB_NAME_PATTERN)
    schedule: str | None = None
    repository: str = "local"
    # how old the last successful run may grow before the job is stale (status, notifications)
    max_age: str | None = None
    # who hears of this job's failures, recoveries, staleness (davit/domain/notifyspec.py)
    notify: JobNotify | None = None
    # the daemon that runs this job when several share one log ("Several daemons" in the README)
    runs_on: str | None = Field(default=None, pattern=DAEMON_NAME_PATTERN)

    @field_validator("max_age")
    @classmethod
    def _max_age_is_a_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def max_age_seconds(self) -> int | None:
        return None if self.max_age is None else parse_duration(self.max_age)

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 3 * * *')")
        if value is not None:
            # is_valid accepts a day that never comes (30 February), which has no next fire
            try:
                croniter(value, _A_LEAP_YEAR).get_next(datetime)
            except CroniterBadDateError:
                raise ValueError(f"{value!r}: the day it names never comes (e.g. 30 February)") from None
        return value


class SnapshotRef(Spec):
    """`latest` of a job, or one snapshot by id (a unique prefix is enough)."""

    job: str | None = Field(default=None, pattern=JOB_NAME_PATTERN)
    snapshot: str = Field(default="latest", min_length=1)  # "" would be a prefix of every id

    @model_validator(mode="after")
    def _latest_needs_job(self) -> SnapshotRef:
        if self.snapshot == "latest" and self.job is None:
            raise ValueError("snapshot = 'latest' needs the job whose latest snapshot to use")
        return self


def absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


def distinct_renames(value: dict[str, str], check_name: Callable[[str], str]) -> dict[str, str]:
    """A restore's `rename` table (snapshot database -> target database): every name passes the
    engine's `check_name`, and no two databases are renamed to one (their tables would mix)."""
    for source, target in value.items():
        check_name(source)
        check_name(target)
    targets = list(value.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"several databases renamed to {', '.join(twice)}")
    return value


def exactly_one_ref(env: str | None, file: str | None, what: str) -> None:
    """A secret is given by exactly one reference: an environment variable or a file."""
    if (env is None) == (file is None):
        raise ValueError(f"give exactly one of {what}_env or {what}_file")


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


def inline_secrets(node: dict[str, Any], prefix: str = "") -> list[FieldProblem]:
    """Secrets written into the job file: a secret-named key with a value, or a URI carrying a
    password in any field (a job's spec is recorded in the log, so it must hold none)."""
    found = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += inline_secrets(value, path + ".")
        elif key in INLINE_SECRET_KEYS and isinstance(value, str):
            found.append(
                FieldProblem(
                    path,
                    f"secrets are never written inline; use {key}_env (an environment variable) or {key}_file (a file) instead",
                )
            )
        elif any(has_uri_password(text) for text in _strings(value)):
            found.append(
                FieldProblem(
                    path,
                    "holds a URI with a password; secrets are never written inline: "
                    "put the URI in an environment variable or a file and name that",
                )
            )
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    return []


# Fields added after a release, left out of a job's revision while they hold their default. davitd
# compares revisions to tell that a job changed, and runs an unscheduled job once per new revision:
# an upgrade alone must not make every job (a restore among them) run again. A field added later
# goes here with its default; its name must not be one a user's own table (rename, labels) holds.
LATER_FIELDS: dict[str, Any] = {"max_age": None, "notify": None, "privileges": "keep"}
LATER_FIELDS.update(path_map={}, outside_binds="fail", images="missing")  # compose.migrate, issue 21
LATER_FIELDS.update(runs_on=None)  # several daemons, issue 22
LATER_FIELDS.update(keep_transfer_cache=True)  # compose.migrate, issue 21's repeat
LATER_FIELDS.update(follow_definition_symlinks=False)  # compose.migrate, issue 21's symlinked definition files


def spec_revision(spec: BaseModel) -> str:
    """A job's revision: the hash of its normalised spec, so comments and layout don't count."""
    normalised = _without_later_defaults(spec.model_dump(mode="json"))
    canonical = json.dumps(normalised, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _without_later_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _without_later_defaults(value)
            for key, value in node.items()
            if not (key in LATER_FIELDS and value == LATER_FIELDS[key])
        }
    if isinstance(node, list):
        return [_without_later_defaults(item) for item in node]
    return node

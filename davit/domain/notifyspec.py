"""What a job file and davit.toml may say about notifications: the events worth a message,
a job's `[notify]` table, and `route`, which picks the targets a message goes to.

Service URLs hold tokens, so they are named by reference only (`urls_file`, `urls_env`): a job's
spec is recorded in the event log, and a URL written into it would be too.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class NotifyEvent(StrEnum):
    RUN_FAILED = "run_failed"  # a run failed after its retries
    JOB_RECOVERED = "job_recovered"  # the first success after failures
    JOB_STALE = "job_stale"  # no success within the job's max_age
    RUN_RESUMED = "run_resumed"  # a run was interrupted and resumed
    LOG_UNWRITABLE = "log_unwritable"  # davitd could not write its event log


ALL_EVENTS: tuple[NotifyEvent, ...] = tuple(NotifyEvent)


class JobNotify(BaseModel):
    """A job file's `[notify]` table: which of davit.toml's targets hear of this job, or the
    job's own target (URLs by reference only: a job's spec is recorded in the log)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # names of davit.toml's [notifications.targets.*]; absent: all of them (or none, when the
    # job names its own urls_file / urls_env)
    targets: list[str] | None = None
    urls_file: str | None = None
    urls_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    events: list[NotifyEvent] | None = None  # for the job's own target; absent: all

    @field_validator("urls_file")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path (a file holding one apprise URL a line)")
        return value

    @property
    def own_target(self) -> bool:
        return self.urls_file is not None or self.urls_env is not None


def job_target_name(job: str) -> str:
    return f"job:{job}"


def route(
    event: NotifyEvent,
    job: str | None,
    notify: Mapping[str, Any] | None,
    targets: Mapping[str, frozenset[NotifyEvent]],
) -> list[str]:
    """The names of the targets a message of `event` about `job` goes to: davit.toml's targets
    that want the event, narrowed or replaced by the job's `[notify]`; a job's own target is
    named `job:NAME`."""
    spec = JobNotify.model_validate(notify) if notify else None
    if spec is not None and not spec.enabled:
        return []
    names = sorted(name for name, wanted in targets.items() if event in wanted)
    if spec is None:
        return names
    if spec.targets is not None:
        names = [name for name in names if name in spec.targets]
    elif spec.own_target:
        names = []  # the job's own target replaces the global ones
    if spec.own_target and job is not None and event in (spec.events or ALL_EVENTS):
        names.append(job_target_name(job))
    return names

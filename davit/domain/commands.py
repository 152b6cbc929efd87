"""Commands: imperative requests that the CLI appends to the `requests` stream for davitd.

The log doubles as the command channel, so a request survives a daemon that is down and is
handled when it comes back. Handling is idempotent: `RunJobNow` carries the run id the CLI
chose (creating a run stream twice fails its expected-version check), and resume or cancel
of a run already in the asked-for state changes nothing.
"""

from __future__ import annotations

from davit.domain.events import Event, StoredEvent


class RunJobNow(Event):
    job: str
    run_id: str


class ResumeRun(Event):
    run_id: str


class CancelRun(Event):
    run_id: str


class CopyNow(Event):
    """`davit repository copy`: a run of a `repository.copy` spec that no job file defines (the
    daemon builds and validates the spec, `domain.jobs.copy.adhoc_copy`; the request names
    repositories and snapshots, never a whole spec, so a request cannot start any other kind)."""

    run_id: str
    source_repository: str
    repository: str
    jobs: list[str] = []
    snapshot: str | None = None


COMMAND_TYPES: dict[str, type[Event]] = {c.type_name(): c for c in (RunJobNow, ResumeRun, CancelRun, CopyNow)}


def decode_command(stored: StoredEvent) -> Event | None:
    cls = COMMAND_TYPES.get(stored.type)
    return cls.model_validate(stored.data) if cls else None

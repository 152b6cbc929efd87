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


COMMAND_TYPES: dict[str, type[Event]] = {c.type_name(): c for c in (RunJobNow, ResumeRun, CancelRun)}


def decode_command(stored: StoredEvent) -> Event | None:
    cls = COMMAND_TYPES.get(stored.type)
    return cls.model_validate(stored.data) if cls else None

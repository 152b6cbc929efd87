"""Events: past-tense facts, each a pydantic model with a `type` and a schema version.

The eventstore persists an event as (id, type, schema, JSON data); `decode` turns a stored
row back into its model. Old events stay readable: a model only ever gains optional fields,
and a schema bump adds an upcaster here. Run events name the machine trigger they fire
(`trigger`), which is how the fold derives a run's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from davit.domain.machine import Trigger


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    schema_version: ClassVar[int] = 1
    trigger: ClassVar[Trigger | None] = None

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


# --- streams -------------------------------------------------------------------------------

DAEMON_STREAM = "daemon"
REQUESTS_STREAM = "requests"
NOTIFICATIONS_STREAM = "notifications"


def run_stream(run_id: str) -> str:
    return f"run-{run_id}"


def job_stream(name: str) -> str:
    return f"job-{name}"


def name_stream(name: str) -> str:
    """Where daemons claim a `[daemon] name` at start (`NameClaimed`) and `davit daemons forget`
    retires it (`NameForgotten`): several daemons on one log."""
    return f"name-{name}"


def request_claim_stream(position: int) -> str:
    """Where the daemon answering the request at `position` claims it (several daemons on one log)."""
    return f"request-{position}"


# --- envelopes shared with the eventstore ---------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    """An event to append; its id is chosen by the writer so a retried append is idempotent."""

    event_id: str
    type: str
    data: dict[str, Any]
    schema: int = 1

    @staticmethod
    def of(event_id: str, event: Event) -> NewEvent:
        return NewEvent(event_id, event.type_name(), event.model_dump(mode="json"), event.schema_version)


@dataclass(frozen=True)
class StoredEvent:
    position: int
    stream: str
    version: int
    event_id: str
    type: str
    schema: int
    data: dict[str, Any]
    recorded_at: str
    hash: str = field(default="", repr=False)


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of an atomic append: all parts commit together or none does."""

    stream: str
    expected_version: int
    events: tuple[NewEvent, ...]


# --- daemon ---------------------------------------------------------------------------------


class DaemonStarted(Event):
    pid: int
    home: str
    version: str
    name: str | None = None  # `[daemon] name` (None in logs written before daemons had names)


class DaemonStopped(Event):
    reason: str


class ConfigReloaded(Event):
    """The daemon re-read its config (SIGHUP, `systemctl reload davit`) and applies it to new runs."""

    file: str
    changed: list[str]
    needs_restart: list[str] = []


class ConfigRejected(Event):
    """A reload found the config invalid; the daemon keeps the settings it had."""

    file: str
    problems: list[dict[str, str]]


class JobFileRejected(Event):
    file: str
    problems: list[dict[str, str]]
    content_sha256: str = ""


class RequestsHandled(Event):
    upto_position: int
    # the daemon whose progress it is (several daemons on one log: each restarts from its own,
    # not from another's that passed a request this one had claimed). None: the one daemon.
    daemon: str | None = None


# --- jobs -----------------------------------------------------------------------------------


class JobDefined(Event):
    name: str
    kind: str
    revision: str
    file: str
    spec: dict[str, Any]
    daemon: str | None = None  # the daemon whose jobs directory holds `file` (several daemons on one log)


class JobRetired(Event):
    name: str
    file: str
    reason: str


class JobRunTriggered(Event):
    run_id: str
    revision: str
    reason: str  # "new-revision" | "schedule" | "manual"
    scheduled_for: str | None = None


# --- runs -----------------------------------------------------------------------------------


class RunQueued(Event):
    run_id: str
    job: str
    kind: str
    revision: str
    spec: dict[str, Any]
    reason: str


class RunPreparing(Event):
    trigger: ClassVar[Trigger | None] = Trigger.PREPARE
    attempt: int = 1


class RunStarted(Event):
    trigger: ClassVar[Trigger | None] = Trigger.START
    plan: list[str]
    details: dict[str, Any] = {}


class LeaseStamped(BaseModel):
    """Mixed into the step events: `lease` is the token of the lease (`RunClaimed.token`) its
    daemon held when it appended the event (several daemons on one log), so the log alone says
    which claim wrote each step. None, and then left out of the stored data, where no lease is
    held (one daemon, SQLite): such logs are written byte for byte as before."""

    lease: str | None = None

    @model_serializer(mode="wrap")
    def _lease_only_when_held(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("lease") is None:
            data.pop("lease", None)
        return data


class StepStarted(LeaseStamped, Event):
    """`commits`: this step commits the run's result (a backup's `publish`, a migration's
    `finalize`); once it has started a cancel no longer applies (see `davit/domain/machine.py`)."""

    step: str
    commits: bool = False


class CheckpointRecorded(LeaseStamped, Event):
    """A unit of work is durable; `cursor` says where to continue after it. `bytes_total` and
    `items_total`: what the whole step amounts to, when its work could tell (a scan, collection
    stats, volume sizes; an estimate for some kinds); None in logs written before they existed
    and for steps that cannot tell. They ride on the checkpoints, so progress adds no events."""

    step: str
    cursor: dict[str, Any]
    chunks_written: list[str] = []
    bytes_done: int = 0
    bytes_stored: int = 0
    items_done: int = 0
    bytes_total: int | None = None
    items_total: int | None = None


class StepCompleted(LeaseStamped, Event):
    step: str
    summary: dict[str, Any] = {}


class RunWarning(Event):
    message: str
    step: str | None = None


class RunVerifying(Event):
    trigger: ClassVar[Trigger | None] = Trigger.VERIFY


class RunSucceeded(Event):
    trigger: ClassVar[Trigger | None] = Trigger.SUCCEED
    snapshot_id: str | None = None
    summary: dict[str, Any] = {}


class RunFailed(Event):
    trigger: ClassVar[Trigger | None] = Trigger.FAIL
    error: str
    error_type: str


class RunWaitingRetry(Event):
    trigger: ClassVar[Trigger | None] = Trigger.WAIT_RETRY
    error: str
    error_type: str
    attempt: int
    retry_at: str


class RunInterrupted(Event):
    trigger: ClassVar[Trigger | None] = Trigger.INTERRUPT
    reason: str


class RunRequeued(Event):
    trigger: ClassVar[Trigger | None] = Trigger.REQUEUE
    reason: str


class RunCancelling(Event):
    trigger: ClassVar[Trigger | None] = Trigger.CANCEL
    reason: str = "requested"


class RunCancelled(Event):
    trigger: ClassVar[Trigger | None] = Trigger.CANCELLED


class CancelIgnored(Event):
    """A cancel arrived after the run's committing step `step` had started: the run goes on and
    ends as its work does (a backup `succeeded`, with its snapshot), and says so."""

    reason: str
    step: str
    state: str


class RunRollingBack(Event):
    trigger: ClassVar[Trigger | None] = Trigger.ROLL_BACK
    cause: str


class RunRolledBack(Event):
    trigger: ClassVar[Trigger | None] = Trigger.ROLLED_BACK
    cause: str


class RunClaimed(Event):
    """Daemon `owner` executes the run from now on, under the lease `token` (several daemons on
    one log: `davit/daemon/leases.py`). Appended at the run's expected stream version, so of two
    daemons claiming at once one wins; `expires_at` (the owner's wall clock) is informative, a
    lease ends when no renewal was seen for `lease_seconds`. `taken_from`: the daemon whose
    lease had expired when this one took the run over."""

    owner: str
    token: str
    lease_seconds: float
    expires_at: str
    taken_from: str | None = None


class LeaseRenewed(Event):
    """The owner of the lease `token` still works on the run (every `lease_renew_seconds`)."""

    owner: str
    token: str
    expires_at: str


class RetentionApplied(Event):
    forgotten: list[str]
    kept: list[str]
    packs_deleted: int = 0
    bytes_freed: int = 0


class ClockMoved(Event):
    """The wall clock was found stepped (daemon stream): `seconds` is how far (negative: back;
    at least that far when found from fires recorded ahead of it). Schedules were planned again
    from the clock's new time, so a fire recorded while it was ahead holds nothing back."""

    seconds: float
    detail: str
    jobs: list[str] = []


class RequestFailed(Event):
    """davitd could not handle the request recorded at `position` (it does not decode, names
    a type this davitd does not know, or handling it raised): the CLI waiting on it stops
    waiting and says why. `reason` names what failed, never the request's values."""

    position: int
    request_type: str
    reason: str
    run_id: str | None = None


class RequestClaimed(Event):
    """With several daemons on one log, `owner` answers the request at `position` (handles it,
    or records its `RequestFailed`); appended at version 0 of `request_claim_stream(position)`,
    so of daemons claiming at once one lands and the others leave the request alone."""

    position: int
    owner: str


class NotificationSent(Event):
    """A message (`key`: what caused it, see `davit/domain/notifications.py`) reached the
    target named `target` (a name from davit.toml or `job:NAME`, never its URL)."""

    key: str
    target: str
    event: str
    attempt: int
    job: str | None = None
    run_id: str | None = None


class NotificationFailed(Event):
    """An attempt to deliver a message failed; `reason` has every URL and token taken out.
    `final`: that was the last attempt, the message is given up."""

    key: str
    target: str
    event: str
    attempt: int
    reason: str
    final: bool = False
    job: str | None = None
    run_id: str | None = None


class NameClaimed(Event):
    """A daemon starting under `name` on a shared log claimed it, appended at the version of
    `name_stream(name)` it read: of two daemons starting at once under one name, one lands."""

    name: str
    host: str
    pid: int
    # its `DaemonBeat.started_at`: which life of (host, pid) claimed (a container restarted
    # keeps both; "" in a claim recorded before this field)
    started_at: str = ""
    # the claiming machine's boot id (Linux `/proc/sys/kernel/random/boot_id`): two machines of
    # one host name (a cloned VM) are told apart by it; "" where unknown or recorded before it
    boot_id: str = ""


class NameForgotten(Event):
    """`davit daemons forget NAME`: the daemon of this name is gone; `davit daemons` no longer
    lists it (until a daemon claims the name again)."""

    name: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name(): cls
    for cls in (
        DaemonStarted,
        DaemonStopped,
        ConfigReloaded,
        ConfigRejected,
        JobFileRejected,
        RequestsHandled,
        JobDefined,
        JobRetired,
        JobRunTriggered,
        RunQueued,
        RunPreparing,
        RunStarted,
        StepStarted,
        CheckpointRecorded,
        StepCompleted,
        RunWarning,
        RunVerifying,
        RunSucceeded,
        RunFailed,
        RunWaitingRetry,
        RunInterrupted,
        RunRequeued,
        RunCancelling,
        RunCancelled,
        CancelIgnored,
        RunRollingBack,
        RunRolledBack,
        RetentionApplied,
        ClockMoved,
        RunClaimed,
        LeaseRenewed,
        RequestFailed,
        NotificationSent,
        NotificationFailed,
        RequestClaimed,
        NameClaimed,
        NameForgotten,
    )
}


def decode(stored: StoredEvent) -> Event | None:
    """The model of a stored event, or None for a type this version does not know."""
    cls = EVENT_TYPES.get(stored.type)
    return cls.model_validate(stored.data) if cls else None

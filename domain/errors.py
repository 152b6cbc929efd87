"""One error tree for davit, rooted at `DavitError`.

```
DavitError
├── PermanentError              fail the run at once; an operator must act
│   ├── InvalidJob              a job file or spec is wrong (file, field, reason)
│   ├── InvalidConfig           the daemon configuration is wrong
│   ├── IllegalTransition       the run machine refused a trigger
│   │   └── AlreadyCommitted    ... because the run's committing step has started (a late cancel)
│   ├── CorruptChunk            a stored chunk does not match its hash
│   ├── CorruptSnapshot         a snapshot's tree holds a hostile or malformed entry
│   ├── TargetInTheWay          a restore found something it may not replace at a path
│   ├── SnapshotNotFound
│   ├── TargetNotEmpty          a restore would overwrite data without `overwrite = true`
│   ├── SourceMissing           the thing to back up is not there
│   └── StorageFull             no space left where davit writes
│       └── EventLogFull        ... where the event log is (davitd waits for room, see below)
├── RetryableError              back off and try again (network, busy server)
│   ├── RepositoryLockLost      a held repository lock was taken over or not refreshed
│   └── EventLogUnavailable     the event log cannot be written now (I/O error, read-only)
├── ConcurrencyError            an append's expected version was stale (eventstore)
└── RunStopped                  a worker is asked to stop (shutdown, cancel)
    └── EventLogStop            ... because its run's events cannot be recorded now
```

`EventLogFull` and `EventLogUnavailable` (together `LOG_UNWRITABLE`) never fail a run: a run
whose events cannot be recorded stops at its next checkpoint and resumes once the log takes
writes again; davitd retries its own appends meanwhile.

Each error knows the CLI exit code it maps to; only the CLI's entry point turns errors into
exit codes. Messages never carry secrets: adapters redact before raising.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.redaction import strip_uri_credentials

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class DavitError(Exception):
    """Base of every error davit raises on purpose."""

    exit_code = EXIT_FAILED
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PermanentError(DavitError):
    """Retrying cannot help: the run fails at once."""


class RetryableError(DavitError):
    """A passing condition (network, busy peer): back off with jitter and try again."""

    retryable = True


class ConcurrencyError(DavitError):
    """An append named a stale expected version; nothing of it was written."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, append expected {expected}"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class FieldProblem:
    """One reason a job file or config is invalid, located by its dotted field path."""

    field: str
    reason: str

    def __post_init__(self) -> None:
        # Reasons quote the operator's input; a URI with a password pasted into any field
        # must not travel on into events and logs.
        object.__setattr__(self, "field", strip_uri_credentials(self.field))
        object.__setattr__(self, "reason", strip_uri_credentials(self.reason))

    def render(self, file: str) -> str:
        return f"{file}: {self.field}: {self.reason}"


class InvalidJob(PermanentError):
    exit_code = EXIT_USAGE

    def __init__(self, file: str, problems: list[FieldProblem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("; ".join(p.render(file) for p in problems))


class InvalidConfig(PermanentError):
    exit_code = EXIT_USAGE

    def __init__(self, file: str, problems: list[FieldProblem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("; ".join(p.render(file) for p in problems))


class IllegalTransition(PermanentError):
    def __init__(self, run_id: str, state: str, trigger: str) -> None:
        super().__init__(f"run {run_id}: cannot {trigger!r} from state {state!r}")
        self.run_id = run_id
        self.state = state
        self.trigger = trigger


class AlreadyCommitted(IllegalTransition):
    """A trigger (a cancel) refused because the run's committing step has started: what that
    step commits (a published snapshot, a removed migration source) will exist whatever follows."""

    def __init__(self, run_id: str, state: str, trigger: str, step: str) -> None:
        super().__init__(run_id, state, trigger)
        self.message = f"{self.message}: step {step!r} has started, which commits the run"
        self.step = step


class CorruptChunk(PermanentError):
    def __init__(self, chunk_id: str, where: str, reason: str) -> None:
        super().__init__(f"chunk {chunk_id} in {where} is corrupt: {reason}")
        self.chunk_id = chunk_id
        self.where = where


class CorruptSnapshot(PermanentError):
    """A snapshot's tree holds an entry no walk can produce (a name with `..`, an absolute
    path, an entry under a symlink, a hard link out of the tree, bad JSON): the restore fails
    before it writes anything."""

    def __init__(self, snapshot_id: str, entry: str, reason: str) -> None:
        super().__init__(f"snapshot {snapshot_id} is corrupt: entry {entry}: {reason}; nothing was restored")
        self.snapshot_id = snapshot_id
        self.entry = entry
        self.reason = reason


class TargetInTheWay(PermanentError):
    """Something in the restore target stands where the snapshot has an entry of another
    type, and the restore may not replace it (a directory is never removed; anything else
    only with `overwrite = true`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"restore target path {path}: {reason}")
        self.path = path


class TargetUnwritable(PermanentError):
    """The restore target refused an entry (a name too long for its file system, a read-only
    or foreign file system, no permission): what the operator must change, named."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"restore target path {path}: {reason}")
        self.path = path


class SnapshotNotFound(PermanentError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no snapshot matches {ref!r}")
        self.ref = ref


class TargetNotEmpty(PermanentError):
    def __init__(self, target: str) -> None:
        super().__init__(
            f"restore target {target} is not empty; set overwrite = true to restore into it"
        )
        self.target = target


class SourceMissing(PermanentError):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"source {source} cannot be read: {reason}")
        self.source = source


class UnsafeName(PermanentError):
    """A name stored in a snapshot (a namespace, a path) that would put a file outside the
    directory it is written into: the snapshot is refused before anything is written."""

    def __init__(self, snapshot: str, name: str, reason: str) -> None:
        super().__init__(f"snapshot {snapshot} is refused: {name!r} cannot be written as a path: {reason}")
        self.snapshot = snapshot
        self.name = name
        self.reason = reason


class StorageFull(PermanentError):
    def __init__(self, where: str) -> None:
        super().__init__(f"no space left on the device holding {where}")
        self.where = where


class RepositoryLockLost(RetryableError):
    """A lock this process held on a repository is gone or was not refreshed in time: whatever
    it protected (a prune's deletions) stopped before doing harm, and can be run again."""

    def __init__(self, repository: str, lock_id: str, reason: str) -> None:
        super().__init__(f"repository {repository}: lock {lock_id} is no longer held: {reason}")
        self.repository = repository
        self.lock_id = lock_id


class RunStopped(DavitError):
    """Raised inside a worker when the run is asked to stop (shutdown or cancel)."""


class EventLogFull(StorageFull):
    """The file system holding the event log is full, or the log hit a file-size limit
    (`ulimit -f`, a quota): nothing can be recorded until the operator makes room."""

    def __init__(self, state_dir: str, reason: str) -> None:
        super().__init__(state_dir)
        self.message = f"no space left for the event log in {state_dir}: {reason}"
        self.reason = reason


class EventLogUnavailable(RetryableError):
    """The event log cannot be written now for another storage reason (an I/O error, a file
    system remounted read-only): what failed, and where."""

    def __init__(self, state_dir: str, reason: str) -> None:
        super().__init__(f"the event log in {state_dir} cannot be written: {reason}")
        self.where = state_dir
        self.reason = reason


# The errors that say "the log cannot take writes now", not "this append is wrong".
LOG_UNWRITABLE: tuple[type[DavitError], ...] = (EventLogFull, EventLogUnavailable)


class EventLogStop(RunStopped):
    """Raised inside a worker whose event could not be recorded because the log cannot be
    written: the run stops at this checkpoint and resumes once the log takes writes again."""

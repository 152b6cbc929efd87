"""One error tree for davit, rooted at `DavitError`.

Every subclass in the code is drawn here, where it sits (a test holds the drawing to the
classes): those of this module, then in parentheses the module of the others.

```
DavitError
├── PermanentError              fail the run at once; an operator must act
│   ├── InvalidJob              a job file or spec is wrong (file, field, reason)
│   ├── InvalidConfig           the daemon configuration is wrong
│   ├── DaemonNameInUse         another live davitd beats on the log under this one's name: exit 2
│   ├── IllegalTransition       the run machine refused a trigger
│   │   └── AlreadyCommitted    ... because the run's committing step has started (a late cancel)
│   ├── CorruptChunk            a stored chunk does not match its hash
│   ├── CorruptSnapshot         a snapshot's tree holds a hostile or malformed entry
│   ├── TargetInTheWay          a restore found something it may not replace at a path
│   ├── TargetUnwritable        the restore target refused an entry (name too long, read-only)
│   ├── SnapshotNotFound        no snapshot (or more than one) matches a reference; in the CLI exit 2
│   ├── TargetNotEmpty          a restore would overwrite data without `overwrite = true`
│   ├── SourceMissing           the thing to back up is not there
│   ├── UnsafeName              a stored name would be written outside its directory
│   ├── StorageFull             no space left where davit writes
│   │   └── EventLogFull        ... where the event log is (davitd waits for room, see below)
│   ├── BackendDenied           a repository's server refused the credential or the operation
│   │   └── DeletesDenied       ... a delete: pruning needs a maintenance credential
│   ├── RepositoryKeyError      (adapters/repository/crypto) passphrase missing or wrong: exit 2
│   ├── StagingGone             (adapters/repository/staging) a resumed run's staging was removed
│   ├── CopyNotPossible         (adapters/copy/lines) a snapshot cannot be copied into the destination as asked
│   ├── SecretUnavailable       (adapters/secrets) a passphrase or password reference cannot be read
│   ├── HostKeyRejected         (adapters/sshtrust) the SSH host key is not trusted
│   ├── RemoteLoginFailed       (adapters/ssh/remote) SSH authentication failed
│   ├── RemoteRefused           (adapters/ssh/remote) the connection cannot be made as configured
│   ├── RemoteCommandFailed     (adapters/ssh/remote) a remote command exited non-zero
│   ├── ComposeFailed           (adapters/compose/source) `docker compose` could not run or failed
│   ├── ExportFailed            (adapters/compose/pipeline) a volume's tar export failed
│   ├── PreflightFailed         (adapters/compose/target) a host lacks what a migration needs
│   ├── TargetNotHealthy        (adapters/compose/target) the migrated stack did not come up
│   ├── BindsMisplaced          (adapters/compose/binds) the target's compose mounts a bind elsewhere
│   ├── ImageMismatch           (adapters/compose/images) the target loaded another image ID than the source's
│   ├── EngineNotLocal          (adapters/compose/backup) a stack backup's engine is not on this host
│   ├── ProjectExists           (adapters/compose/restore) a restore's project name is taken on the target
│   ├── DefinitionClash         (adapters/compose/definition) two project files would be copied under one name
│   ├── DefinitionSymlinkedOut  (adapters/compose/migrate) a definition file resolves outside its project
│   ├── EngineError             (adapters/docker/engine) the Docker engine refused a request
│   ├── ArchiveOutOfOrder       (adapters/docker/archive) the engine's archive not in walk order
│   ├── HelperAccessNotAvailable (adapters/docker/helper) no way to reach the engine's volumes
│   ├── HelperImageMissing      (adapters/docker/helper) the helper image is not on the engine
│   ├── HelperImageUnfit        (adapters/docker/helper) the helper image lacks a program
│   ├── MongoAuthFailed         (adapters/mongo/client) MongoDB refused the credentials
│   ├── MongoBadUri             (adapters/mongo/client) the URI cannot be used
│   ├── MongoRefused            (adapters/mongo/client) MongoDB refused an operation
│   │   └── MongoConflict       (adapters/mongo/client) a unique index holds the value already
│   ├── MysqlAuthFailed         (adapters/mysql/client) MariaDB/MySQL refused the login or an access
│   ├── MysqlRefused            (adapters/mysql/client) MariaDB/MySQL refused an operation
│   ├── ValueTooLarge           (adapters/mysql/pieces) a value over the target's max_allowed_packet
│   ├── TableMismatch           (adapters/mysql/restore) the target's table cannot take the snapshot's rows
│   ├── BadRecord               (adapters/mongo/textimport) a line of a JSON/CSV import is wrong
│   ├── PostgresAuthFailed      (adapters/postgres/client) PostgreSQL refused the user's password
│   ├── PostgresRefused         (adapters/postgres/client) PostgreSQL or pg_dump/pg_restore refused an operation
│   ├── ArchiveError            (adapters/postgres/archive) a pg_dump archive cannot be read
│   ├── TreeRefused             (adapters/sqltree) a SQL snapshot's tree line a restore must not act on
│   ├── WeaviateRejected        (adapters/weaviate/client) Weaviate refused a request
│   ├── CollectionExists        (adapters/weaviate/schema) the restore's collection is there already
│   ├── TextfileRefused         (daemon/metricsfile) a link or directory is at the metrics textfile's name
│   └── TooManyFailedObjects    (adapters/weaviate/restore) too many objects refused in a batch
├── RetryableError              back off and try again (network, busy server)
│   ├── RepositoryLockLost      a held repository lock was taken over or not refreshed
│   ├── BackendUnavailable      a repository's server did not answer (after the backend's retries)
│   ├── EventLogUnavailable     the event log cannot be written now (I/O error, read-only)
│   ├── RemoteUnreachable       (adapters/ssh/remote) the SSH host did not answer
│   ├── ChunkMismatch           (adapters/compose/pipeline) a chunk kept on a migration's target is not what its name says
│   ├── EngineUnreachable       (adapters/docker/engine) the Docker engine did not answer
│   ├── MongoUnreachable        (adapters/mongo/client) MongoDB did not answer
│   ├── PostgresUnreachable     (adapters/postgres/client) PostgreSQL did not answer
│   ├── MysqlUnreachable        (adapters/mysql/client) MariaDB/MySQL did not answer (or was busy)
│   └── WeaviateUnavailable     (adapters/weaviate/client) Weaviate did not answer
├── ConcurrencyError            an append's expected version was stale (eventstore)
├── EventStoreError             the event log cannot be opened or used as asked (eventstore)
│   ├── EventLogMissing         (eventstore/sqlite) no log where one must be: exit 2
│   ├── EventLogDamaged         (eventstore/sqlite) the database cannot be read as a davit log
│   ├── EventLogTooNew          (eventstore/sqlite) written by a newer davit: exit 2
│   ├── EventLogReadOnly        (eventstore/sqlite) an append asked of a read-only log: exit 2
│   └── EventStoreUrlError      (eventstore/postgres) the PostgreSQL log's URL cannot be used (never shown)
├── LogKeyError                 (eventstore/logkey) the log key is missing, unreadable or malformed: exit 2
├── InvalidArgument             a command's argument names nothing usable: exit 2
│   └── UnknownJob              ... a job no file defines
├── CommandFailed               a command's answer is "no"; its own output may have said why
│   ├── RunDidNotSucceed        `run`/`cancel --wait`: the run ended otherwise, not in time, or was refused
│   ├── VerificationFailed      `verify`, `log verify`: damage found
│   ├── JobFilesInvalid         `validate`: a job file is not valid: exit 2
│   ├── ChecksFailed            (daemon/cli/check) `check`: a check of these jobs failed: exit 1
│   └── HealthNotOk             `status`: the verdict is WARNING, CRITICAL or UNKNOWN: exit 1, 2 or 3
└── RunStopped                  a worker is asked to stop (shutdown, cancel)
    └── EventLogStop            ... because its run's events cannot be recorded now
```

`EventLogFull` and `EventLogUnavailable` (together `LOG_UNWRITABLE`) never fail a run: a run
whose events cannot be recorded stops at its next checkpoint and resumes once the log takes
writes again; davitd retries its own appends meanwhile.

Each error knows the CLI exit code it maps to (1 unless drawn above with another); only the
CLI's entry point (`davit/daemon/cli/main.py`, and `davit/daemon/davitd.py` for the daemon's start) turns
errors into exit codes. Messages never carry secrets: adapters redact before raising.
"""

from __future__ import annotations

from dataclasses import dataclass

from davit.domain.redaction import strip_uri_credentials

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
        super().__init__(f"stream {stream!r} is at version {actual}, append expected {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class EventStoreError(DavitError):
    """The event log cannot be opened or used as asked (davit/eventstore/sqlite.py raises it and its
    subclasses). Here, not there, so that the tree above has one home and the daemon can name it
    without the store."""


class InvalidArgument(DavitError):
    """A command's argument names nothing usable (a repository the config lacks, a snapshot of
    another kind): `argument` is the option or argument, the message says what is wrong."""

    exit_code = EXIT_USAGE

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class UnknownJob(InvalidArgument):
    """A command names a job no file in the jobs directory defines (or one that is retired)."""

    def __init__(self, job: str) -> None:
        super().__init__("JOB", f"no job named {job!r} is defined (see `davit jobs`)")
        self.job = job


class CommandFailed(DavitError):
    """A command ran to its answer and the answer is "no": a run that did not succeed, a check
    that found damage. `reported` is True when the command's own output has already said why
    (the state line of a run, the problems a check found): the entry point then adds no line
    and only exits with `exit_code`."""

    def __init__(self, message: str, reported: bool) -> None:
        super().__init__(message)
        self.reported = reported


class RunDidNotSucceed(CommandFailed):
    """`davit run --wait` or `cancel --wait`: the run ended otherwise than asked (`state`), did
    not end in time (`state` None), or davitd could not handle the request."""

    def __init__(self, run_id: str, message: str, state: str | None = None, reported: bool = False) -> None:
        super().__init__(message, reported)
        self.run_id = run_id
        self.state = state


class VerificationFailed(CommandFailed):
    """`davit verify` or `log verify` found `problems` in `subject` (a snapshot, the event log);
    the command has printed them."""

    def __init__(self, subject: str, problems: list[str]) -> None:
        super().__init__(f"{subject}: {len(problems)} problems: {'; '.join(problems)}", reported=True)
        self.subject = subject
        self.problems = problems


class JobFilesInvalid(CommandFailed):
    """`davit validate`: these `files` are not valid jobs; the command has printed one
    `file: field: reason` line per problem."""

    exit_code = EXIT_USAGE

    def __init__(self, files: list[str]) -> None:
        super().__init__(f"not valid jobs: {', '.join(files)}", reported=True)
        self.files = files


class HealthNotOk(CommandFailed):
    """`davit status`: the verdict is not OK; it exits with the Nagios plugin code the verdict
    names (1 WARNING, 2 CRITICAL, 3 UNKNOWN), the command having printed why."""

    def __init__(self, code: int, summary: str) -> None:
        super().__init__(summary, reported=True)
        self.exit_code = code


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
    """No snapshot, or (`matches` > 1) more than one, answers to a reference: an id, a prefix,
    `latest`. Named on a command line it is a usage error; in a restore it fails the run."""

    exit_code = EXIT_USAGE

    def __init__(self, ref: str, matches: int = 0) -> None:
        super().__init__(f"{'more than one' if matches > 1 else 'no'} snapshot matches {ref!r}")
        self.ref = ref
        self.matches = matches


class TargetNotEmpty(PermanentError):
    def __init__(self, target: str) -> None:
        super().__init__(f"restore target {target} is not empty; set overwrite = true to restore into it")
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


class BackendDenied(PermanentError):
    """The server holding a repository refused the credential or an operation (a wrong key, a
    bucket policy without delete): retrying will not help; an operator must act."""

    def __init__(self, repository: str, operation: str, reason: str) -> None:
        super().__init__(f"repository {repository}: {operation} refused: {reason}")
        self.repository = repository
        self.operation = operation


class DeletesDenied(BackendDenied):
    """A repository's credential may not delete (a backup-only credential, by policy or by the
    config's `delete = false`): retention and pruning are left to a maintenance credential
    (`davit repository prune NAME`); backups still work."""


class BackendUnavailable(RetryableError):
    """The server holding a repository did not answer, after the backend's own retries: the run
    stops at this point and resumes from its checkpoint later."""

    def __init__(self, repository: str, operation: str, reason: str) -> None:
        super().__init__(f"repository {repository}: {operation} failed: {reason}")
        self.repository = repository
        self.operation = operation


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


class DaemonNameInUse(PermanentError):
    """Another live davitd beats on this log under the same `[daemon] name`: a second one would
    take the first one's leases for its own previous life's and interrupt its runs."""

    exit_code = EXIT_USAGE

    def __init__(self, config_file: str, name: str, host: str, pid: int, age_seconds: float, fresh_seconds: float) -> None:
        super().__init__(
            f"{config_file}: [daemon] name {name!r} is in use: daemon {name!r} on host {host!r} (pid {pid}) beat on this "
            f"event log {age_seconds:.0f} s ago; give this daemon another name, or stop that one and start this one once "
            f"its last beat is {fresh_seconds:.0f} s old"
        )
        self.name = name
        self.host = host

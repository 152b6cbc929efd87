"""The jobs the daemon knows, projected from the log, and their sync with the jobs directory.

`JobRegistry` is rebuilt from the `job-*` streams at start-up and kept current as the daemon
appends; it indexes active jobs by name and by file, so no lookup scans every job. Syncing
compares files with what the registry last read of them: a new or changed valid file records
`JobDefined`, an invalid one `JobFileRejected` (naming file, field and reason, once per
content), a removed file `JobRetired`. Nothing else changes on a bad file: jobs already defined
keep running.

Two ways in, both reading only what changed: `sync_paths` for the names the watcher reported
(each re-read), and `sync_directory`, a full pass that only `lstat`s every `*.toml` and re-reads
a file whose (inode, size, mtime, ctime) differs from when it was last read (at start-up, every
file; afterwards, a periodic reconcile that catches what the watcher missed). Definitions are
appended in batches, one transaction for many job streams, so thousands of dropped files are
defined in seconds. `on_change` is told of every job whose events were applied (the scheduler
plans from it).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from davit.daemon.jobfiles import load_job_file
from davit.daemon.recorder import append_unordered, new_event_id
from davit.domain import events as ev
from davit.domain.errors import FieldProblem
from davit.domain.jobs import AnyJob, spec_revision
from davit.domain.ports import EventLog

# Kinds whose data is on the host: with several daemons, run only by the daemon that defined the job.
LOCAL_KINDS = frozenset({"files", "volume", "compose"})
log = logging.getLogger("davitd.jobs")
BATCH_STREAMS = 256  # job streams per transaction when defining many files at once
JOB_FILE_SUFFIX = ".toml"
FileStamp = tuple[int, int, int, int]  # (inode, size, mtime_ns, ctime_ns)


def stamp_of(path: Path) -> FileStamp | None:
    """What says a job file changed, without reading it; None if `path` is absent or a
    directory. A symlink is stamped by what it points at (stat only: the reader decides whether
    it may be followed), a dangling one by itself; a FIFO or device is stamped too, so the
    reader refuses it (unread) with a verdict instead of it being skipped in silence."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(path)
            except OSError:
                pass
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class JobState:
    name: str
    kind: str = ""
    file: str = ""
    revision: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    retired: bool = True
    version: int = 0
    triggered_revisions: set[str] = field(default_factory=set)
    last_scheduled_for: str | None = None
    defined_at: str = ""
    daemon: str | None = None  # the daemon whose jobs directory defines it (None: the log's one daemon)

    def apply(self, stored: ev.StoredEvent) -> None:
        self.version = stored.version
        event = ev.decode(stored)
        match event:
            case ev.JobDefined():
                self.kind, self.file, self.revision, self.spec = event.kind, event.file, event.revision, event.spec
                self.retired, self.defined_at = False, stored.recorded_at
                self.daemon = event.daemon
            case ev.JobRetired():
                self.retired = True
            case ev.JobRunTriggered():
                self.triggered_revisions.add(event.revision)
                if event.scheduled_for:
                    self.last_scheduled_for = event.scheduled_for


class JobRegistry:
    def __init__(self, log_: EventLog) -> None:
        self.log = log_
        self.jobs: dict[str, JobState] = {}
        self.rejected: dict[str, str] = {}  # file -> content hash of its latest rejection
        self.stamps: dict[str, FileStamp] = {}  # file -> its stamp when last read
        self.directory_stamp: tuple[int, int] | None = None
        self.on_change: Callable[[JobState], None] | None = None
        self._active: dict[str, JobState] = {}  # name -> job, active ones only
        self._by_file: dict[str, str] = {}  # file -> name of the active job it defines
        self._file_of: dict[str, str] = {}  # name -> the file it is indexed under in _by_file
        self._claims: dict[str, str] = {}  # file -> the name it was refused because another file has it
        # Several daemons on one log: this daemon's name. Its jobs directory then speaks only for
        # the jobs it defined (another daemon's file is not "gone" from this one's directory).
        self.daemon_name: str | None = None

    async def load(self) -> None:
        async for stored in self.log.iter_all(stream_prefix="job-"):
            name = stored.stream.removeprefix("job-")
            self.jobs.setdefault(name, JobState(name)).apply(stored)
        for job in self.jobs.values():
            self._index(job)
        async for stored in self.log.iter_all(stream_prefix=ev.DAEMON_STREAM):
            if stored.type == ev.JobFileRejected.type_name():
                self.rejected[stored.data["file"]] = stored.data.get("content_sha256", "")

    def active(self) -> list[JobState]:
        return list(self._active.values())

    def active_count(self) -> int:
        return len(self._active)

    def by_name(self, name: str) -> JobState | None:
        """The active job called `name`."""
        return self._active.get(name)

    def by_file(self, file: str) -> JobState | None:
        name = self._by_file.get(file)
        return self._active.get(name) if name is not None else None

    def _index(self, job: JobState) -> None:
        """Bring the indexes in line with `job` after events were applied to it."""
        old = self._file_of.pop(job.name, None)
        if old is not None and self._by_file.get(old) == job.name:
            del self._by_file[old]
        if job.retired:
            self._active.pop(job.name, None)
        else:
            self._active[job.name] = job
            if job.daemon is None or self.daemon_name is None or job.daemon == self.daemon_name:
                # (by file: this daemon's directory's jobs only. Another host's file at the
                # same path, of another job name, would take the entry over: this daemon's file
                # removed or renamed then retired nothing)
                self._by_file[job.file] = job.name
                self._file_of[job.name] = job.file

    async def append(self, name: str, *events: ev.Event, extra: list[ev.StreamAppend] | None = None) -> list[ev.StoredEvent]:
        """Append `events` to the job's stream (and `extra` in the same transaction); every
        stored event, the job's first (as written: no read of the log)."""
        state = self.jobs.setdefault(name, JobState(name))
        stream = ev.job_stream(name)
        part = ev.StreamAppend(stream, state.version, tuple(ev.NewEvent.of(new_event_id(), e) for e in events))
        stored = await self.log.append_atomic_read_back([part, *(extra or [])])
        self._applied(state, [item for item in stored if item.stream == stream])
        return stored

    async def follow(self, stored: ev.StoredEvent) -> None:
        """Apply an event another daemon appended to a job's stream (several daemons on one
        log); an event this registry already applied is passed over, a gap read from the log."""
        name = stored.stream.removeprefix("job-")
        state = self.jobs.setdefault(name, JobState(name))
        if stored.version <= state.version:
            return
        if stored.version == state.version + 1:
            self._applied(state, [stored])
        else:
            self._applied(state, await self.log.read_stream(stored.stream, state.version + 1))
        if state.retired and self.daemon_name is not None and state.daemon == self.daemon_name and state.file:
            # one of this daemon's jobs retired by another process (`davit daemons forget` while
            # this daemon was paused): its file, unchanged, is read again at the next pass and
            # defines it again (its stamp alone kept it retired until the file changed)
            self.stamps.pop(state.file, None)

    def _applied(self, state: JobState, stored: Iterable[ev.StoredEvent]) -> None:
        for item in stored:
            if item.version > state.version:  # (the follower of the log may have applied it first)
                state.apply(item)
        self._index(state)
        if self.on_change is not None:
            self.on_change(state)

    # --- syncing with the directory --------------------------------------------------------

    async def sync_directory(self, jobs_dir: Path) -> list[str]:
        """A full pass: stamp every `*.toml`, re-read only those whose stamp changed, retire the
        jobs of files that are gone. Names of jobs (re)defined."""
        present: dict[str, FileStamp] = {}
        with os.scandir(jobs_dir) as entries:
            for entry in entries:
                if entry.name.endswith(JOB_FILE_SUFFIX):
                    path = jobs_dir / entry.name
                    stamp = stamp_of(path)
                    if stamp is not None:
                        present[str(path)] = stamp
        gone = (set(self._by_file) | set(self.stamps)) - set(present)
        if self.daemon_name is not None:
            gone = {f for f in gone if (job := self.by_file(f)) is None or job.daemon == self.daemon_name}
        changed = {f: s for f, s in present.items() if self.stamps.get(f) != s}
        st = os.stat(jobs_dir)
        if (st.st_mode, st.st_uid) != self.directory_stamp:
            # the directory's mode and owner are part of every file's verdict (StrictModes)
            self.directory_stamp = (st.st_mode, st.st_uid)
            changed = present
        return await self._sync(jobs_dir, gone, changed)

    async def sync_paths(self, jobs_dir: Path, names: Iterable[str]) -> list[str]:
        """Sync the files the watcher reported (names directly in `jobs_dir`); each is re-read,
        since its stamp may not have moved (coarse timestamps). Names of jobs (re)defined."""
        gone: set[str] = set()
        changed: dict[str, FileStamp] = {}
        for name in set(names):
            if not name.endswith(JOB_FILE_SUFFIX) or "/" in name:
                continue
            path = jobs_dir / name
            stamp = stamp_of(path)
            if stamp is None:
                gone.add(str(path))
            else:
                changed[str(path)] = stamp
        return await self._sync(jobs_dir, gone, changed)

    async def _sync(self, jobs_dir: Path, gone: set[str], changed: dict[str, FileStamp]) -> list[str]:
        batch = _Batch()
        defined: list[str] = []
        for file in sorted(gone):
            self._claims.pop(file, None)
            job = self.by_file(file)
            if job is not None:
                await self._room_for(batch, {job.name})
                batch.add(job.name, ev.JobRetired(name=job.name, file=file, reason="file removed"))
                log.info("job %s retired: %s was removed", job.name, file)
            batch.gone.add(file)
        await self._read_files(jobs_dir, batch, changed, defined)
        await self._flush(batch)
        # A file refused because its name was taken gets its turn once the name is free.
        freed = {
            f: s
            for f in list(self._claims)
            if self.by_name(self._claims[f]) is None and f not in changed and (s := stamp_of(Path(f))) is not None
        }
        if freed:
            await self._read_files(jobs_dir, batch, freed, defined)
            await self._flush(batch)
        return defined

    async def _read_files(self, jobs_dir: Path, batch: _Batch, changed: dict[str, FileStamp], defined: list[str]) -> None:
        for file in sorted(changed):
            self._claims.pop(file, None)
            loaded = load_job_file(Path(file), jobs_dir)
            if loaded.spec is None:
                # (loaded.file: the name as it may be recorded, escaped if it is not printable)
                await self._reject(loaded.file, loaded.fingerprint, loaded.problems)
                self.stamps[file] = changed[file]
                continue
            name = await self._define(batch, file, loaded.spec, loaded.content_sha256)
            if file not in self._claims:  # a refused claim stays unstamped: the reconcile reads it again
                batch.stamps[file] = changed[file]
            if name:
                defined.append(name)

    async def _define(self, batch: _Batch, file: str, spec: AnyJob, content_hash: str) -> str | None:
        """Plan what `file`'s valid spec records, into `batch`; the name if it (re)defines a job."""
        previous = self.by_file(file)
        if previous is not None and previous.daemon not in (None, self.daemon_name):
            previous = None  # another host's job, from a file at the same path there: not this file's to rename
        await self._room_for(batch, {spec.name, *([previous.name] if previous else [])})
        revision = spec_revision(spec)
        owner = self.by_name(spec.name)
        if owner is not None and owner.file != file:
            taken = FieldProblem("name", f"job {spec.name!r} is already defined by {owner.file}")
            await self._reject(file, content_hash, [taken])
            self._claims[file] = spec.name
            return None
        if owner is not None and owner.daemon not in (None, self.daemon_name):
            # Another host's jobs directory may sit at the same path (`/etc/davit/jobs` on both):
            # its file of that name is not this one's, and a files job must stay on its host.
            taken = FieldProblem("name", f"job {spec.name!r} is already defined by daemon {owner.daemon!r} ({owner.file})")
            await self._reject(file, content_hash, [taken])
            self._claims[file] = spec.name
            return None
        runs_on = getattr(spec, "runs_on", None)
        if runs_on and self.daemon_name is not None and spec.kind.split(".", 1)[0] in LOCAL_KINDS and runs_on != self.daemon_name:
            elsewhere = FieldProblem(
                "runs_on",
                f"a {spec.kind} job reads this host's data: it runs on the daemon whose jobs directory "
                f"defines it ({self.daemon_name}), not {runs_on!r}",
            )
            await self._reject(file, content_hash, [elsewhere])
            return None
        if previous is not None and previous.name != spec.name:
            batch.add(previous.name, ev.JobRetired(name=previous.name, file=file, reason=f"renamed to {spec.name}"))
        self.rejected.pop(file, None)
        if owner is not None and owner.revision == revision:
            return None
        batch.add(
            spec.name,
            ev.JobDefined(
                name=spec.name,
                kind=spec.kind,
                revision=revision,
                file=file,
                spec=spec.model_dump(mode="json"),
                daemon=self.daemon_name,
            ),
        )
        log.info("job %s defined from %s (revision %s)", spec.name, file, revision)
        return spec.name

    async def _room_for(self, batch: _Batch, names: set[str]) -> None:
        """Decisions about a job read the registry: flush first if the batch already holds
        events of one of `names` (not applied yet), or is full."""
        if names & batch.events.keys() or len(batch.events) >= BATCH_STREAMS:
            await self._flush(batch)

    async def _flush(self, batch: _Batch) -> None:
        """Append the batch in one transaction, then apply what was stored. A failure leaves the
        files unstamped, so the next sync reads them again."""
        if batch.events:
            parts = [
                ev.StreamAppend(
                    ev.job_stream(name),
                    self.jobs.setdefault(name, JobState(name)).version,
                    tuple(ev.NewEvent.of(new_event_id(), e) for e in events),
                )
                for name, events in batch.events.items()
            ]
            positions = await self.log.append_atomic(parts)
            stored: dict[str, list[ev.StoredEvent]] = {}
            # one transaction: its positions are contiguous
            for item in await self.log.read_all(min(positions) - 1, len(positions)):
                stored.setdefault(item.stream, []).append(item)
            for name in batch.events:
                self._applied(self.jobs[name], stored.get(ev.job_stream(name), []))
        self.stamps.update(batch.stamps)
        for file in batch.gone:
            self.stamps.pop(file, None)
        batch.clear()

    async def _reject(self, file: str, content_hash: str, problems: list[FieldProblem]) -> None:
        if self.rejected.get(file) == content_hash and content_hash:
            return
        event = ev.JobFileRejected(
            file=file, problems=[{"field": p.field, "reason": p.reason} for p in problems], content_sha256=content_hash
        )
        await append_unordered(self.log, ev.DAEMON_STREAM, event)
        self.rejected[file] = content_hash
        for p in problems:
            log.error("job file rejected: %s", p.render(file))


@dataclass
class _Batch:
    """Events planned for job streams, and the stamps and removals to record once they are stored."""

    events: dict[str, list[ev.Event]] = field(default_factory=dict)
    stamps: dict[str, FileStamp] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)

    def add(self, name: str, event: ev.Event) -> None:
        self.events.setdefault(name, []).append(event)

    def clear(self) -> None:
        self.events.clear()
        self.stamps.clear()
        self.gone.clear()

"""The jobs the daemon knows, projected from the log, and their sync with the jobs directory.

`JobRegistry` is rebuilt from the `job-*` streams at start-up and kept current as the daemon
appends. `sync_directory` compares the directory with it: a new or changed valid file
records `JobDefined`, an invalid one `JobFileRejected` (naming file, field and reason, once
per content), a removed file `JobRetired`. Nothing else changes on a bad file: jobs already
defined keep running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.jobfiles import load_job_file
from daemon.recorder import append_unordered, new_event_id
from domain import events as ev
from domain.errors import FieldProblem
from domain.jobs import AnyJob, spec_from_json, spec_revision
from eventstore.sqlite import SqliteEventStore

log = logging.getLogger("davitd.jobs")


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

    def typed_spec(self) -> AnyJob:
        return spec_from_json(self.spec)

    def apply(self, stored: ev.StoredEvent) -> None:
        self.version = stored.version
        event = ev.decode(stored)
        match event:
            case ev.JobDefined():
                self.kind, self.file, self.revision, self.spec = event.kind, event.file, event.revision, event.spec
                self.retired, self.defined_at = False, stored.recorded_at
            case ev.JobRetired():
                self.retired = True
            case ev.JobRunTriggered():
                self.triggered_revisions.add(event.revision)
                if event.scheduled_for:
                    self.last_scheduled_for = event.scheduled_for


class JobRegistry:
    def __init__(self, log_: SqliteEventStore) -> None:
        self.log = log_
        self.jobs: dict[str, JobState] = {}
        self.rejected: dict[str, str] = {}  # file -> content hash of its latest rejection

    async def load(self) -> None:
        async for stored in self.log.iter_all(stream_prefix="job-"):
            name = stored.stream.removeprefix("job-")
            self.jobs.setdefault(name, JobState(name)).apply(stored)
        async for stored in self.log.iter_all(stream_prefix=ev.DAEMON_STREAM):
            if stored.type == ev.JobFileRejected.type_name():
                self.rejected[stored.data["file"]] = stored.data.get("content_sha256", "")

    def active(self) -> list[JobState]:
        return [j for j in self.jobs.values() if not j.retired]

    def by_file(self, file: str) -> JobState | None:
        return next((j for j in self.active() if j.file == file), None)

    async def append(self, name: str, *events: ev.Event, extra: list[ev.StreamAppend] | None = None) -> None:
        state = self.jobs.setdefault(name, JobState(name))
        stream = ev.job_stream(name)
        part = ev.StreamAppend(stream, state.version, tuple(ev.NewEvent.of(new_event_id(), e) for e in events))
        await self.log.append_atomic([part, *(extra or [])])
        for stored in await self.log.read_stream(stream, state.version + 1):
            state.apply(stored)

    async def sync_directory(self, jobs_dir: Path) -> list[str]:
        """Bring the registry in line with the directory; names of jobs (re)defined."""
        defined: list[str] = []
        # every entry but a directory gets a verdict: a FIFO or a link leading out is rejected, not skipped
        present = {str(p): p for p in sorted(jobs_dir.glob("*.toml")) if not p.is_dir()}
        for job in self.active():
            if job.file not in present:
                await self.append(job.name, ev.JobRetired(name=job.name, file=job.file, reason="file removed"))
                log.info("job %s retired: %s was removed", job.name, job.file)
        for file, path in present.items():
            loaded = load_job_file(path, jobs_dir)
            if loaded.spec is None:
                await self._reject(file, loaded.fingerprint, loaded.problems)
                continue
            name = await self._define(file, loaded.spec, loaded.content_sha256)
            if name:
                defined.append(name)
        return defined

    async def _define(self, file: str, spec: AnyJob, content_hash: str) -> str | None:
        revision = spec_revision(spec)
        owner = next((j for j in self.active() if j.name == spec.name), None)
        if owner is not None and owner.file != file:
            taken = FieldProblem("name", f"job {spec.name!r} is already defined by {owner.file}")
            await self._reject(file, content_hash, [taken])
            return None
        previous = self.by_file(file)
        if previous is not None and previous.name != spec.name:
            await self.append(previous.name, ev.JobRetired(name=previous.name, file=file, reason=f"renamed to {spec.name}"))
        if owner is not None and owner.revision == revision:
            self.rejected.pop(file, None)
            return None
        await self.append(
            spec.name,
            ev.JobDefined(name=spec.name, kind=spec.kind, revision=revision, file=file, spec=spec.model_dump(mode="json")),
        )
        self.rejected.pop(file, None)
        log.info("job %s defined from %s (revision %s)", spec.name, file, revision)
        return spec.name

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

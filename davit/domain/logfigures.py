"""The figures davit's metrics expose, folded from the event log and nothing else.

`LogFigures.apply` takes stored events in log order (davitd feeds it every new page of the log,
`davit/daemon/metrics.py`) and keeps, per job, its ended runs by state, retries, interruptions,
last success and failure times and the last ended run's duration, bytes and items; per
repository, the snapshots it holds as far as the log knows, the bytes backups read and stored
and the bytes retention freed; and the runs not ended, by state. Counters come from the log,
so they survive restarts and say the same after a replay.

Each run is folded with the run machine's own fold (`davit/domain/runs.py`), so a run's state
here is the state `davit runs` shows. A run whose events do not fold is left out, as davitd
leaves it alone.

The state is bounded, not a record of history (davitd folds every event of a log that grows for
years): a run that has ended for good (succeeded, cancelled, rolled back: no transition leaves
those) is forgotten altogether, and an event of a run not held is passed over unless it is the
run's first (`RunQueued` at version 1), so no set of ended ids is needed. A failed run is kept,
since an operator may resume it, but only the last `FAILED_KEPT_PER_JOB` of each job, and
without its warnings, error and summary (the figures use none of them); a running run's
warnings are not kept either. Resuming a failed run older than those is still done by davitd,
but its end is not counted here: the one figure the bound may miss.

What the log cannot know is said where it is exposed: snapshots published by another host or
removed by `davit repository prune` are seen at the next retention step of the job (its `kept`
list), and a repository's size is what this log's runs stored less what its retention freed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from davit.domain import events as ev
from davit.domain.durations import parse_duration
from davit.domain.errors import IllegalTransition
from davit.domain.machine import TERMINAL, RunState
from davit.domain.runs import RunView, apply

RETENTION_STEP = "retention"  # the step name of davit/adapters/steps.py
# Ended for good: the machine has no transition out of them (a failed run may be resumed).
FINAL = TERMINAL - {RunState.FAILED}
FAILED_KEPT_PER_JOB = 100  # failed runs held per job for a resume (each a few hundred bytes)


@dataclass(frozen=True)
class EndedRun:
    """The last ended run of a job, as the metrics show it."""

    run_id: str
    state: RunState
    finished_at: float  # seconds since the epoch
    duration_seconds: float | None  # from its first start to its end (retry waits included)
    bytes_done: int
    bytes_stored: int
    items_done: int


@dataclass
class JobFigures:
    name: str
    kind: str = ""
    repository: str = ""
    retired: bool = False  # its job file is gone (an ad-hoc copy's "job" is never defined nor retired)
    max_age_seconds: int | None = None
    ended: Counter[str] = field(default_factory=Counter)  # terminal state -> runs that ended so
    retries: int = 0
    interruptions: int = 0
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_ended: EndedRun | None = None


@dataclass
class RepositoryFigures:
    name: str
    snapshots_by_job: dict[str, set[str]] = field(default_factory=dict)
    backup_read_bytes: int = 0  # what successful backups read from their sources
    backup_stored_bytes: int = 0  # what they added to the repository (after dedup, compressed)
    freed_bytes: int = 0  # what retention steps freed

    @property
    def snapshots(self) -> int:
        return sum(len(ids) for ids in self.snapshots_by_job.values())

    @property
    def size_bytes(self) -> int:
        return max(self.backup_stored_bytes - self.freed_bytes, 0)

    @property
    def dedup_ratio(self) -> float | None:
        """Bytes read by the backups per byte they stored: deduplication and compression together."""
        return self.backup_read_bytes / self.backup_stored_bytes if self.backup_stored_bytes else None


@dataclass
class LogFigures:
    position: int = 0  # the last log position applied
    events: int = 0
    jobs: dict[str, JobFigures] = field(default_factory=dict)
    repositories: dict[str, RepositoryFigures] = field(default_factory=dict)
    runs: dict[str, RunView] = field(default_factory=dict)  # runs that may still change
    _repository_of: dict[str, str] = field(default_factory=dict)
    # per job, its failed runs held (oldest first), so the oldest is forgotten past the bound
    _failed: dict[str, OrderedDict[str, None]] = field(default_factory=dict)

    def apply(self, stored: ev.StoredEvent) -> None:
        self.position = max(self.position, stored.position)
        self.events += 1
        if stored.stream.startswith("job-"):
            self._job_event(stored)
        elif stored.stream.startswith("run-"):
            self._run_event(stored.stream.removeprefix("run-"), stored)

    def runs_by_state(self) -> Counter[str]:
        """The runs that have not ended, by state."""
        return Counter(v.state.value for v in self.runs.values() if v.state not in TERMINAL)

    def job(self, name: str) -> JobFigures:
        return self.jobs.setdefault(name, JobFigures(name))

    def repository(self, name: str) -> RepositoryFigures:
        return self.repositories.setdefault(name, RepositoryFigures(name))

    # --- jobs ----------------------------------------------------------------------------------

    def _job_event(self, stored: ev.StoredEvent) -> None:
        event = _decoded(stored)
        if isinstance(event, ev.JobDefined):
            job = self.job(event.name)
            job.retired, job.kind = False, event.kind
            job.repository = str(event.spec.get("repository") or "")
            job.max_age_seconds = _duration(event.spec.get("max_age"))
        elif isinstance(event, ev.JobRetired):
            self.job(event.name).retired = True

    # --- runs ----------------------------------------------------------------------------------

    def _run_event(self, run_id: str, stored: ev.StoredEvent) -> None:
        view = self.runs.get(run_id)
        if view is None:
            if stored.type != ev.RunQueued.type_name() or stored.version != 1:
                return  # a run ended (or left alone) before, or one forgotten: nothing to fold
            view = RunView(run_id)
        before = view.state
        try:
            apply(view, stored)
        except (IllegalTransition, ValidationError):
            self._forget(run_id)  # as davitd does: a run that does not fold is left alone
            return
        self.runs[run_id] = view
        view.warnings.clear()  # (the figures count none: a run's thousands of warnings are not kept)
        if before is RunState.FAILED and view.state is not before:
            self._failed.get(view.job, OrderedDict()).pop(run_id, None)  # resumed
        if stored.type == ev.RunQueued.type_name():
            self._repository_of[run_id] = str(view.spec.get("repository") or "")
            view.spec, view.details = {}, {}  # (only the repository's name is needed from them)
        if not view.kind:
            if view.state in TERMINAL:
                self._forget(run_id)
            return  # a request for a job that does not exist, refused at once: no job's figure
        job = self.job(view.job)
        if stored.type == ev.RunWaitingRetry.type_name():
            job.retries += 1
        elif stored.type == ev.RunInterrupted.type_name():
            job.interruptions += 1
        elif stored.type == ev.StepCompleted.type_name() and stored.data.get("step") == RETENTION_STEP:
            self._retention(view, stored.data.get("summary"))
        if view.state is not before and view.state in TERMINAL:
            self._ended(view, job)

    def _ended(self, view: RunView, job: JobFigures) -> None:
        finished = _timestamp(view.finished_at)
        started = _timestamp(view.started_at)
        job.ended[view.state.value] += 1
        stored_bytes = sum(s.bytes_stored for s in view.steps.values())
        if finished is not None:
            job.last_ended = EndedRun(
                view.run_id,
                view.state,
                finished,
                finished - started if started is not None else None,
                view.bytes_done,
                stored_bytes,
                view.items_done,
            )
            if view.state is RunState.SUCCEEDED:
                job.last_success_at = finished
            elif view.state is RunState.FAILED:
                job.last_failure_at = finished
        if view.state is RunState.SUCCEEDED and view.kind.endswith(".backup"):
            repo = self.repository(self._repository_of.get(view.run_id, ""))
            repo.backup_read_bytes += view.bytes_done
            repo.backup_stored_bytes += stored_bytes
            if view.snapshot_id:
                repo.snapshots_by_job.setdefault(view.job, set()).add(view.snapshot_id)
        if view.state in FINAL:
            self._forget(view.run_id)
        elif view.state is RunState.FAILED:
            view.error, view.summary, view.plan = None, {}, []
            held = self._failed.setdefault(view.job, OrderedDict())
            held[view.run_id] = None
            while len(held) > FAILED_KEPT_PER_JOB:
                self._forget(held.popitem(last=False)[0])

    def _forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        self._repository_of.pop(run_id, None)

    def _retention(self, view: RunView, summary: Any) -> None:
        """A retention step's summary: the job's kept snapshots (a copy's: per job copied) and
        the bytes its prune freed."""
        if not isinstance(summary, dict):
            return
        repo = self.repository(self._repository_of.get(view.run_id, ""))
        per_job = {view.job: summary} if "kept" in summary else {k: v for k, v in summary.items() if isinstance(v, dict)}
        for job, figures in per_job.items():
            kept = figures.get("kept")
            if isinstance(kept, list):
                repo.snapshots_by_job[job] = {str(s) for s in kept}
            freed = figures.get("bytes_freed")
            if isinstance(freed, int) and not isinstance(freed, bool) and freed > 0:
                repo.freed_bytes += freed


def _decoded(stored: ev.StoredEvent) -> ev.Event | None:
    try:
        return ev.decode(stored)
    except ValidationError:
        return None  # not an event davit wrote: the figures pass over it


def _duration(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None

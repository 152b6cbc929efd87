"""The step loop every job's `run` shares: `run_steps(ctx, steps)`, and the shared last steps.

A run is a list of named steps. Resuming must never redo a step whose completion is recorded
(guarantee 8), the step that makes the run's result exist (a snapshot's `publish`, a
migration's `finalize`) must be started with `commits=True` so a cancel recorded before it
wins and one after it is ignored, and each step is recorded started, then completed with its
summary. Those rules live here once instead of in each adapter's hand-written `if not
ctx.step_done(...)` chain. A step that fails raises out of the loop: the steps after it are
not started, and the executor decides whether the run is retried (from this same loop, which
then skips what was done) or fails.

`publish_then_retention` gives a backup's last steps: `publish` (committing) and, when the job
has a retention policy, `retention`. In a repository whose credential may not delete (a
backup-only one), `retention` is skipped, not failed: the run succeeds, and a warning and the
step's summary say to run `davit repository prune NAME` with a maintenance credential.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention
from davit.domain.errors import DeletesDenied
from davit.domain.jobs import Retention
from davit.domain.ports import RunContext

PUBLISH, RETENTION = "publish", "retention"

StepWork = Callable[[RunContext], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One named step of a plan.

    `work` does it and returns the summary recorded with its completion. `commits`: the step
    makes the run's result exist (see `RunContext.step_started`). `records_itself`: `work`
    records the start and completion of this step (and maybe of others: steps that overlap,
    like a migration's export, transfer and import) itself; what it returns is not used."""

    name: str
    work: Callable[[RunContext], dict[str, Any] | None]
    commits: bool = False
    records_itself: bool = False


def run_steps(ctx: RunContext, steps: Iterable[Step], *, stop_between: bool = False) -> None:
    """Do each step not yet done, in order. `stop_between`: check for a stop request before
    each step that is still to do (a migration does, so a cancel takes effect between steps)."""
    # A step whose work returned; its completion is recorded with the next step's start (one
    # append at the boundary: `RunContext.step_handover`), or alone after the last step.
    finished: tuple[str, dict[str, Any]] | None = None
    for step in steps:
        if ctx.step_done(step.name):
            continue  # committed work is never redone
        if finished is not None and (stop_between or step.records_itself):
            ctx.step_completed(*finished)
            finished = None
        if stop_between:
            ctx.check_stop()
        if step.records_itself:
            step.work(ctx)
            continue
        if finished is not None:
            ctx.step_handover(*finished, step.name, commits=step.commits)
        else:
            ctx.step_started(step.name, commits=step.commits)
        summary = step.work(ctx)
        finished = (step.name, summary if summary is not None else {})
    if finished is not None:
        ctx.step_completed(*finished)


def step_names(steps: Sequence[Step]) -> list[str]:
    """The plan the steps make."""
    return [step.name for step in steps]


class BackupSpec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def repository(self) -> str: ...

    @property
    def retention(self) -> Retention: ...


class Backup(Protocol):
    """What the shared last steps need of a backup's work: its job and its repository (read only
    when retention runs, so building the plan does not open the repository)."""

    @property
    def spec(self) -> BackupSpec: ...

    @property
    def repo(self) -> Repository: ...


def publish_then_retention(work: Backup, publish: StepWork) -> list[Step]:
    """A backup's last steps: `publish` (which commits the run) and, if the job keeps only some
    snapshots, `retention`."""
    return [publish_step(publish), *retention_steps(work)]


def publish_step(publish: StepWork) -> Step:
    """`publish`: makes the snapshot exist, so it commits the run (a cancel recorded after it
    started is ignored)."""
    return Step(PUBLISH, publish, commits=True)


def retention_steps(work: Backup) -> list[Step]:
    """`retention` if the job's policy keeps only some snapshots, else nothing."""
    if work.spec.retention.is_empty():
        return []
    spec = work.spec

    def retention(ctx: RunContext) -> dict[str, Any]:
        summary = retention_unless_denied(ctx, work.repo, spec.repository, [spec.name], spec.retention)
        return summary.get(spec.name, summary)  # the job's own figures, or what was skipped

    return [Step(RETENTION, retention)]


def retention_unless_denied(
    ctx: RunContext, repo: Repository, repository: str, jobs: Sequence[str], policy: Retention
) -> dict[str, Any]:
    """`policy` applied to each of `jobs` in `repo` (configured as `repository`): the summary of
    each job. If the credential may not delete, nothing more is tried: a warning says so and the
    summary's `skipped` too; the run goes on (a backup-only daemon, see the module docstring)."""
    done: dict[str, Any] = {}
    try:
        for job in jobs:
            done[job] = apply_retention(repo, job, policy)
    except DeletesDenied as exc:
        message = (
            f"retention skipped: repository {repository} allows no delete; run `davit repository prune {repository}` "
            "with a maintenance credential"
        )
        ctx.warn(f"{message} ({exc})", step=RETENTION)
        return {**done, "skipped": message}
    return done

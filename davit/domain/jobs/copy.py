"""Job spec of `repository.copy`: snapshots of one repository copied into another (3-2-1).

`source_repository` is read, `repository` (the job's own, as for every kind) receives the
copies. `jobs` limits the copy to the snapshots of those jobs (empty: every job), `snapshot`
to one snapshot (an id or a unique prefix). A copy keeps each snapshot's id, so copying again
copies only what the destination lacks. `retention` is the destination's policy for the jobs
copied: applied there after the copy, and a snapshot it would forget at once is not copied.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from davit.domain.jobs.base import JOB_NAME_PATTERN, JobBase, Retention

REPOSITORY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
JobName = Annotated[str, Field(pattern=JOB_NAME_PATTERN)]


class RepositoryCopyJob(JobBase):
    kind: Literal["repository.copy"]
    source_repository: str = Field(pattern=REPOSITORY_NAME_PATTERN)
    jobs: list[JobName] = Field(default_factory=list)
    snapshot: str | None = Field(default=None, min_length=1, max_length=128)
    retention: Retention = Field(default_factory=Retention)

    @model_validator(mode="after")
    def _two_repositories(self) -> RepositoryCopyJob:
        if self.source_repository == self.repository:
            raise ValueError("source_repository and repository are the same: a copy needs two repositories")
        return self


ADHOC_NAME = "repository-copy"  # the job name of a run of `davit repository copy` (no job file)


def adhoc_copy(source_repository: str, repository: str, jobs: list[str], snapshot: str | None) -> dict[str, Any]:
    """The spec (as a job file would give it) of an ad-hoc copy; validated like one by the caller.
    Its runs share one job name, so two of them run one after the other, never at once."""
    spec: dict[str, Any] = {
        "name": ADHOC_NAME,
        "kind": "repository.copy",
        "source_repository": source_repository,
        "repository": repository,
        "jobs": list(jobs),
    }
    if snapshot is not None:
        spec["snapshot"] = snapshot
    return spec

"""Job spec of `repository.copy`: snapshots of one repository copied into another (3-2-1).

`source_repository` is read, `repository` (the job's own, as for every kind) receives the
copies. `jobs` limits the copy to the snapshots of those jobs (empty: every job), `snapshot`
to one snapshot (an id or a unique prefix). A copy keeps each snapshot's id, so copying again
copies only what the destination lacks. `retention` is the destination's policy for the jobs
copied: applied there after the copy, and a snapshot it would forget at once is not copied.
"""

from __future__ import annotations

from typing import Annotated, Literal

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

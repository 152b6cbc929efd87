"""Job spec of `compose.backup`: a whole compose stack (its definition files, named volumes and
bind-mounted data) into one snapshot of a repository, with retention.

The project is found on the local engine by its compose labels, as `compose.migrate` finds it;
davitd must run on that engine's host (it reads the definition files, the bind sources and the
volumes' mountpoints directly). Containers of the project labelled `davit.stop-during-backup=true`
(or `=GROUP` with `stop_group`) are stopped for the backup and started again, as `volume.backup`
does. `images = true` stores each image the project's containers run too (as `docker save`
exports it, by image ID): opt-in, since images can mostly be pulled again and are large.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from davit.domain.jobs.base import JobBase, Retention, Spec


class ComposeBackupSource(Spec):
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")  # the com.docker.compose.project label


class ComposeBackupJob(JobBase):
    kind: Literal["compose.backup"]
    source: ComposeBackupSource
    engine: str | None = None  # a unix:// socket on this host; default: davitd's DOCKER_HOST
    stop_group: str | None = None  # only containers labelled davit.stop-during-backup=GROUP
    stop_timeout: int = Field(default=30, ge=0)
    images: bool = False  # also store the images the project's containers run
    retention: Retention = Field(default_factory=Retention)

"""Job spec of `compose.restore`: a `compose` snapshot (what `compose.backup` stored: the
definition, named volumes, bind data and optionally images) onto a host reached over SSH,
under the snapshot's project name or another (`project`).

The target side is `compose.migrate`'s: `base_path` is where the project directory lands, bind
sources under the snapshot's project directory go under the new one, a bind source outside it
goes where `path_map` puts it or, unmapped, as `outside_binds` says (fail pre-flight, the
default; keep its path; skip it). An image the snapshot holds is loaded when the target lacks it
(by image ID, checked after the load) unless `images = "none"`. A failed restore removes what it
created (the project, its volumes, its bind data, the images it loaded that nothing else uses)
unless `keep_failed_target`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from davit.domain.jobs.base import JobBase, SnapshotRef
from davit.domain.jobs.compose import SshTarget
from davit.domain.pathmap import check_path_map

PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"  # compose's own rule for a project name


class ComposeRestoreJob(JobBase):
    kind: Literal["compose.restore"]
    source: SnapshotRef
    project: str | None = Field(default=None, pattern=PROJECT_PATTERN)  # default: the snapshot's project
    target: SshTarget
    keep_failed_target: bool = False
    verify_timeout: float = Field(default=120, gt=0)
    min_free_bytes: int = Field(default=0, ge=0)
    path_map: dict[str, str] = Field(default_factory=dict)
    outside_binds: Literal["fail", "keep-path", "skip"] = "fail"
    images: Literal["missing", "none"] = "missing"

    _path_map = field_validator("path_map")(check_path_map)

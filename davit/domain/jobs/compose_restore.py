"""Job spec of `compose.restore`: a `compose` snapshot (what `compose.backup` stored: the
definition, named volumes, bind data and optionally images) onto a host reached over SSH, or
onto this host's engine (no `[target] host`), under the snapshot's project name or another
(`project`).

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

from pydantic import Field, field_validator, model_validator

from davit.domain.jobs.base import JobBase, SnapshotRef, Spec, absolute_path
from davit.domain.pathmap import check_path_map

PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"  # compose's own rule for a project name


class RestoreTarget(Spec):
    """A host over SSH (`host`, with `key_file` and `known_hosts`: its key checked, never
    accepted), as `compose.migrate`'s target; or, without `host`, this host's `engine`."""

    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    key_file: str | None = None
    known_hosts: str | None = None
    engine: str | None = None  # without `host`: the local engine (default: davitd's DOCKER_HOST)
    base_path: str
    helper_image: str  # an image present on the target with tar, used to fill volumes
    connect_timeout: float = Field(default=30, gt=0)

    _absolute = field_validator("base_path")(absolute_path)

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _absolute_if_given(cls, value: str | None) -> str | None:
        # a null (a JSON job) is "not given", never a crash in `absolute_path`
        return None if value is None else absolute_path(value)

    @model_validator(mode="after")
    def _ssh_or_local(self) -> RestoreTarget:
        if self.host is not None and (self.key_file is None or self.known_hosts is None):
            raise ValueError("a target with `host` needs `key_file` and `known_hosts` (its host key is checked, never accepted)")
        if self.host is None and (self.key_file is not None or self.known_hosts is not None):
            raise ValueError("`key_file` and `known_hosts` are for a target reached over SSH: set `host` too")
        if self.host is not None and self.engine is not None:
            raise ValueError("`engine` is for a restore onto this host (no `host`); over SSH the session's engine is used")
        return self


class ComposeRestoreJob(JobBase):
    kind: Literal["compose.restore"]
    source: SnapshotRef
    project: str | None = Field(default=None, pattern=PROJECT_PATTERN)  # default: the snapshot's project
    target: RestoreTarget
    keep_failed_target: bool = False
    verify_timeout: float = Field(default=120, gt=0)
    min_free_bytes: int = Field(default=0, ge=0)
    path_map: dict[str, str] = Field(default_factory=dict)
    outside_binds: Literal["fail", "keep-path", "skip"] = "fail"
    images: Literal["missing", "none"] = "missing"

    _path_map = field_validator("path_map")(check_path_map)

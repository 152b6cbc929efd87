"""Job specs of the Docker volume kinds: `volume.backup` and `volume.restore`.

A backup selects volumes on one engine by name, by label or by compose project (exactly one
way); containers labelled `davit.stop-during-backup=true` (or `=GROUP` when `stop_group` is
set) that use a selected volume are stopped for the backup and started again afterwards.
A restore writes one volume of a snapshot into a new volume, or into an existing one only
if it is empty or `overwrite = true`. `engine` is the Docker address (default: the daemon's
`DOCKER_HOST`); `helper_image` is a local image (never pulled) used to reach a volume's data
through a container when the engine runs on another host.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from davit.domain.jobs.base import JobBase, Retention, SnapshotRef, Spec

STOP_LABEL = "davit.stop-during-backup"
VOLUME_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class VolumeSelection(Spec):
    names: list[str] = Field(default_factory=list)
    label: str | None = None  # "key" or "key=value"
    compose_project: str | None = None
    exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way(self) -> VolumeSelection:
        ways = sum((bool(self.names), self.label is not None, self.compose_project is not None))
        if ways != 1:
            raise ValueError("select volumes in exactly one way: names, label or compose_project")
        return self


class EngineSettings(Spec):
    engine: str | None = None  # e.g. unix:///var/run/docker.sock; default DOCKER_HOST
    helper_image: str | None = None  # a local image; a restore runs its `sync`; never pulled
    access: Literal["auto", "mountpoint", "helper"] = "auto"


class VolumeBackupJob(JobBase, EngineSettings):
    kind: Literal["volume.backup"]
    source: VolumeSelection
    stop_group: str | None = None  # only containers labelled davit.stop-during-backup=GROUP
    stop_timeout: int = Field(default=30, ge=0)
    retention: Retention = Field(default_factory=Retention)


class VolumeRestoreTarget(Spec):
    volume: str = Field(pattern=VOLUME_NAME_PATTERN)
    overwrite: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class VolumeRestoreJob(JobBase, EngineSettings):
    kind: Literal["volume.restore"]
    source: SnapshotRef
    volume: str = Field(pattern=VOLUME_NAME_PATTERN)  # which volume of the snapshot
    target: VolumeRestoreTarget

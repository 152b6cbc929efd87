"""Job specs of the files kinds: `files.backup` and `files.restore`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from davit.domain.jobs.base import JobBase, Retention, SnapshotRef, Spec, absolute_path


class FilesBackupSource(Spec):
    path: str
    exclude: list[str] = Field(default_factory=list)

    _absolute = field_validator("path")(absolute_path)


class FilesBackupJob(JobBase):
    kind: Literal["files.backup"]
    source: FilesBackupSource
    retention: Retention = Field(default_factory=Retention)


class FilesRestoreTarget(Spec):
    path: str
    overwrite: bool = False
    # zero chunks become holes (the content reads back identical; see adapters/files/holes.py)
    sparse: bool = True

    _absolute = field_validator("path")(absolute_path)


class FilesRestoreJob(JobBase):
    kind: Literal["files.restore"]
    source: SnapshotRef
    target: FilesRestoreTarget

"""Job specs of the files kinds: `files.backup` and `files.restore`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

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

    @model_serializer(mode="wrap")
    def _without_default_sparse(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`sparse` at its default is left out: a job's revision is the hash of its dumped
        spec, and a restore job written before this option must keep its revision (a new one
        would run it again after an upgrade)."""
        dumped: dict[str, Any] = handler(self)
        if self.sparse:
            dumped.pop("sparse", None)
        return dumped


class FilesRestoreJob(JobBase):
    kind: Literal["files.restore"]
    source: SnapshotRef
    target: FilesRestoreTarget

"""Pre-flight checks of the files kinds (`davit check`), with the shared path checks
(`adapters/pathchecks.py`). The verdicts are the runs': a backup's source must be a directory
it can read and list (a run's `prepare` refuses anything else); a restore's target must be
empty or allowed to be overwritten, in a directory this user may write, with room for the
snapshot's bytes."""

from __future__ import annotations

from pathlib import Path

from davit.adapters.files.treekinds import FILES_RESTORE_KINDS
from davit.adapters.pathchecks import free_space, readable_directory, writable_place
from davit.domain.checks import CheckInputs
from davit.domain.jobs import FilesBackupJob, FilesRestoreJob


def backup_checks(inputs: CheckInputs) -> None:
    spec: FilesBackupJob = inputs.spec
    readable_directory(inputs.checklist, "source", Path(spec.source.path))
    inputs.check_repository(spec.repository)


def restore_checks(inputs: CheckInputs) -> None:
    spec: FilesRestoreJob = inputs.spec
    stats = inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, FILES_RESTORE_KINDS)
    target = Path(spec.target.path)
    writable_place(inputs.checklist, "target", target, spec.target.overwrite)
    need = stats.get("bytes") if stats else None
    free_space(inputs.checklist, "target", target, need if isinstance(need, int) else None)

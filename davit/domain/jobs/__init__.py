"""Job specs: what a job file declares, as pydantic models discriminated by `kind`.

One module per family of kinds (`files.py`, ...); this module registers them in the union
and parses job files. Parsing lives in the domain because it is pure: the caller hands in the
file's text and its name, and gets a spec or an `InvalidJob` naming file, field and reason.
To add a kind: write its spec module, add the class to `AnyJob` below, its line to the table
of kinds (`davit/daemon/kinds.py`), and an example file in `config/jobs.d/`; tests/unit/test_kinds.py
checks the four agree (the README's "Adding a kind").
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field, TypeAdapter, ValidationError

from davit.domain.errors import FieldProblem, InvalidJob
from davit.domain.jobs import nesting
from davit.domain.jobs.base import JobBase, Retention, SnapshotRef, problems_from_validation, spec_revision
from davit.domain.jobs.base import inline_secrets as _inline_secrets
from davit.domain.jobs.compose import ComposeMigrateJob
from davit.domain.jobs.compose_backup import ComposeBackupJob
from davit.domain.jobs.compose_restore import ComposeRestoreJob
from davit.domain.jobs.copy import RepositoryCopyJob
from davit.domain.jobs.docker import VolumeBackupJob, VolumeRestoreJob
from davit.domain.jobs.files import FilesBackupJob, FilesRestoreJob
from davit.domain.jobs.mongo import MongoBackupJob, MongoExportJob, MongoImportJob, MongoRestoreJob
from davit.domain.jobs.mysql import MysqlBackupJob, MysqlRestoreJob
from davit.domain.jobs.postgres import PostgresBackupJob, PostgresRestoreJob
from davit.domain.jobs.weaviate import WeaviateBackupJob, WeaviateClearJob, WeaviateRestoreJob

# One line per kind; keep the list in sync with config/jobs.d/ (a test checks).
AnyJob = (
    FilesBackupJob
    | FilesRestoreJob
    | VolumeBackupJob
    | VolumeRestoreJob
    | ComposeMigrateJob
    | MongoBackupJob
    | MongoRestoreJob
    | MongoExportJob
    | MongoImportJob
    | MysqlBackupJob
    | MysqlRestoreJob
    | WeaviateBackupJob
    | WeaviateRestoreJob
    | WeaviateClearJob
    | RepositoryCopyJob
    | PostgresBackupJob
    | PostgresRestoreJob
    | ComposeBackupJob
    | ComposeRestoreJob
)
JobSpec = Annotated[AnyJob, Field(discriminator="kind")]

_job_adapter: TypeAdapter[AnyJob] = TypeAdapter(JobSpec)
KINDS: tuple[str, ...] = tuple(get_args(cls.model_fields["kind"].annotation)[0] for cls in get_args(AnyJob))

__all__ = [  # noqa: RUF022 - grouped: registry, specs, functions
    "KINDS",
    "AnyJob",
    "JobSpec",
    "ComposeMigrateJob",
    "ComposeBackupJob",
    "ComposeRestoreJob",
    "FilesBackupJob",
    "FilesRestoreJob",
    "JobBase",
    "MongoBackupJob",
    "MongoRestoreJob",
    "MongoExportJob",
    "MongoImportJob",
    "PostgresBackupJob",
    "PostgresRestoreJob",
    "MysqlBackupJob",
    "MysqlRestoreJob",
    "RepositoryCopyJob",
    "Retention",
    "SnapshotRef",
    "VolumeBackupJob",
    "VolumeRestoreJob",
    "WeaviateBackupJob",
    "WeaviateClearJob",
    "WeaviateRestoreJob",
    "job_from_dict",
    "parse_job",
    "problems_from_validation",
    "spec_from_json",
    "spec_revision",
]


def parse_job(text: str, file: str) -> AnyJob:
    """Parse a job file's text; raise `InvalidJob` naming file, field and reason.

    Nesting is bounded before anything recursive runs (`nesting`), and `RecursionError` is
    caught as a last line: whatever the text, the caller gets a verdict, never a crash.
    """
    raw = nesting.loads_bounded(text)
    if isinstance(raw, FieldProblem):
        raise InvalidJob(file, [raw])
    return job_from_dict(raw, file)


def job_from_dict(raw: dict[str, Any], file: str) -> AnyJob:
    too_deep = nesting.value_problem(raw)
    if too_deep is not None:
        raise InvalidJob(file, [too_deep])
    try:
        problems = _precheck(raw)
        if problems:
            raise InvalidJob(file, problems)
        try:
            return _job_adapter.validate_python(raw)
        except ValidationError as exc:
            raise InvalidJob(file, problems_from_validation(exc, skip_leading=1)) from exc
    except RecursionError as exc:
        raise InvalidJob(file, [FieldProblem("(job)", nesting.too_deep())]) from exc


def _precheck(raw: dict[str, Any]) -> list[FieldProblem]:
    kind = raw.get("kind")
    if kind is None:
        return [FieldProblem("kind", f"missing; expected one of {', '.join(KINDS)}")]
    if kind not in KINDS:
        return [FieldProblem("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")]
    return _inline_secrets(raw)


def spec_from_json(data: dict[str, Any]) -> AnyJob:
    """Re-read a spec recorded in an event (it was valid when recorded)."""
    return _job_adapter.validate_python(data)

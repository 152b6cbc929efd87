"""Job specs of the MongoDB kinds: `mongo.backup` and `mongo.restore`.

The server is named by reference only (`uri_env` or `uri_file`, exactly one): a MongoDB URI
carries its password. Namespaces are selected and renamed with mongorestore's patterns (see
`domain/namespaces.py`); the patterns are checked here, so a bad one is reported with the
job file instead of failing a run later. A per-namespace query is Extended JSON text.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, field_validator, model_validator

from domain.jobs.base import JOB_NAME_PATTERN, JobBase, Retention, Spec, absolute_path, exactly_one_ref
from domain.namespaces import PatternError, Renamer, check_pattern, split_ns


def _patterns(values: list[str]) -> list[str]:
    for value in values:
        try:
            check_pattern(value)
        except PatternError as exc:
            raise ValueError(str(exc)) from exc
    return values


def _namespace(value: str) -> str:
    try:
        split_ns(value)
    except PatternError as exc:
        raise ValueError(str(exc)) from exc
    return value


class MongoServer(Spec):
    uri_env: str | None = None
    uri_file: str | None = None

    @model_validator(mode="after")
    def _one_uri(self) -> MongoServer:
        exactly_one_ref(self.uri_env, self.uri_file, "uri")
        return self


class MongoBackupSource(MongoServer):
    databases: list[str] = Field(default_factory=list)  # empty: every database but admin/local/config
    include: list[str] = Field(default_factory=list)  # namespace patterns; empty: all
    exclude: list[str] = Field(default_factory=list)
    query: dict[str, str] = Field(default_factory=dict)  # namespace -> filter as Extended JSON text

    _checked = field_validator("include", "exclude")(_patterns)

    @field_validator("query")
    @classmethod
    def _queries_are_json_objects(cls, value: dict[str, str]) -> dict[str, str]:
        for ns, text in value.items():
            try:
                split_ns(ns)
                parsed = json.loads(text)
            except PatternError as exc:
                raise ValueError(str(exc)) from exc
            except ValueError as exc:
                raise ValueError(f"query for {ns} is not JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise ValueError(f"query for {ns} must be a JSON object")
        return value


class MongoBackupJob(JobBase):
    kind: Literal["mongo.backup"]
    source: MongoBackupSource
    retention: Retention = Field(default_factory=Retention)
    parallel: int = Field(default=2, ge=1, le=16)  # collections dumped at once
    chunk_kib: int = Field(default=1024, ge=16, le=16384)  # raw BSON per chunk (whole documents)


class MongoRestoreSource(Spec):
    """A davit snapshot (`job` + `snapshot`) or a mongodump directory (`from_mongodump`)."""

    job: str | None = Field(default=None, pattern=JOB_NAME_PATTERN)
    snapshot: str = "latest"
    from_mongodump: str | None = None

    _absolute = field_validator("from_mongodump")(lambda v: v if v is None else absolute_path(v))

    @model_validator(mode="after")
    def _one_source(self) -> MongoRestoreSource:
        if self.from_mongodump is not None and (self.job is not None or self.snapshot != "latest"):
            raise ValueError("give either from_mongodump or job/snapshot, not both")
        if self.from_mongodump is None and self.snapshot == "latest" and self.job is None:
            raise ValueError("snapshot = 'latest' needs the job whose latest snapshot to use")
        return self


class MongoRestoreTarget(MongoServer):
    ns_include: list[str] = Field(default_factory=list)
    ns_exclude: list[str] = Field(default_factory=list)
    ns_from: list[str] = Field(default_factory=list)
    ns_to: list[str] = Field(default_factory=list)
    drop: bool = False
    mode: Literal["insert", "upsert"] = "insert"
    strict: bool = False  # an index or option the target rejects fails the run instead of warning

    _checked = field_validator("ns_include", "ns_exclude")(_patterns)

    @model_validator(mode="after")
    def _renames_pair_up(self) -> MongoRestoreTarget:
        try:
            Renamer.of(self.ns_from, self.ns_to)
        except PatternError as exc:
            raise ValueError(str(exc)) from exc
        return self


class MongoRestoreJob(JobBase):
    kind: Literal["mongo.restore"]
    source: MongoRestoreSource
    target: MongoRestoreTarget
    parallel: int = Field(default=2, ge=1, le=16)  # collections restored at once
    batch_kib: int = Field(default=1024, ge=16, le=16384)  # bytes of documents per insert


class MongoExportSource(MongoServer):
    namespace: str
    query: str = "{}"  # Extended JSON
    sort: str = "{}"  # Extended JSON, e.g. '{"createdAt": -1}'; `_id` is appended as the tie-breaker
    skip: int = Field(default=0, ge=0)
    limit: int = Field(default=0, ge=0)  # 0: no limit

    _ns = field_validator("namespace")(_namespace)

    @field_validator("query", "sort")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object")
        return value


class TextFile(Spec):
    path: str
    format: Literal["jsonl", "csv"] = "jsonl"

    _absolute = field_validator("path")(absolute_path)


class MongoExportOutput(TextFile):
    json_mode: Literal["relaxed", "canonical"] = "relaxed"
    fields: list[str] = Field(default_factory=list)  # dotted paths; required for CSV, a projection for JSON

    @model_validator(mode="after")
    def _csv_needs_fields(self) -> MongoExportOutput:
        if self.format == "csv" and not self.fields:
            raise ValueError("format = 'csv' needs the fields to write (its columns)")
        return self


class MongoExportJob(JobBase):
    kind: Literal["mongo.export"]
    source: MongoExportSource
    output: MongoExportOutput


class MongoImportTarget(MongoServer):
    namespace: str
    mode: Literal["insert", "upsert", "merge"] = "insert"
    upsert_fields: list[str] = Field(default_factory=lambda: ["_id"])  # how upsert/merge find a document

    _ns = field_validator("namespace")(_namespace)


class MongoImportJob(JobBase):
    kind: Literal["mongo.import"]
    input: TextFile
    target: MongoImportTarget
    batch_docs: int = Field(default=1000, ge=1, le=100_000)

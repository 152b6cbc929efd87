"""Job specs of the MongoDB kinds: `mongo.backup`, `mongo.restore`, `mongo.export`, `mongo.import`.

The server is named by reference only (`uri_env` or `uri_file`, exactly one): a MongoDB URI
carries its password. Namespaces are selected and renamed with mongorestore's patterns (see
`davit/domain/namespaces.py`); the patterns are checked here, so a bad one is reported with the
job file instead of failing a run later. A per-namespace query is Extended JSON text.

`mongo.export` and `mongo.import` follow mongoexport and mongoimport:

- export: `[source] namespace, query, sort, skip, limit` and `[output] path, format = "jsonl" |
  "csv", json_mode = "relaxed" | "canonical", fields` (dotted paths; for JSON a projection, for
  CSV the columns, in order), `header` (CSV: write the header line, mongoexport's
  `--noHeaderLine` is `header = false`). In CSV a string is written as is, a missing field as
  an empty value, any other value as relaxed Extended JSON (`5`, `{"$oid": "..."}`).
- import: `[input] path, format`, and for CSV `fields` (mongoimport's `--fields`: when given,
  the file has no header line), `columns_have_types` (mongoimport's `--columnsHaveTypes`:
  every column name is `NAME.TYPE(ARG)`, in the header or in `fields`) and `ignore_blanks`
  (an empty value leaves the field out). Without types every CSV value is a string. Types:
  `string()`, `int32()`, `int64()`, `double()`, `decimal()`, `boolean()` (true/false, 1/0,
  yes/no, t/f), `date(LAYOUT)` / `date_go(LAYOUT)` (Go's reference-time layout, e.g.
  `date(2006-01-02)`; empty: RFC 3339), `binary(base64|hex|base32)`, and `auto()`: the value
  read as relaxed Extended JSON when it is JSON (`42`, `true`, `{"$oid": "..."}`, what
  mongo.export's CSV writes), else the string. Dotted names make nested documents.
  `[target] mode`: `insert`, `upsert` (replace the document matching `upsert_fields`, default
  `_id`) or `merge` (`$set` the file's top-level fields into it); either inserts when nothing
  matches or the record lacks a key field.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from davit.domain.jobs.base import JOB_NAME_PATTERN, JobBase, Retention, Spec, absolute_path, exactly_one_ref
from davit.domain.namespaces import PatternError, Renamer, check_pattern, split_ns


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
    snapshot: str = Field(default="latest", min_length=1)  # "" would be a prefix of every id
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
    verify_count: bool = False  # count each target collection at the end (a full scan on some servers)

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
    writers: int = Field(default=2, ge=1, le=8)  # chunks being inserted at once into one collection


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
    header: bool = True  # CSV: write the column names as the first line

    @model_validator(mode="after")
    def _csv_needs_fields(self) -> MongoExportOutput:
        if self.format == "csv" and not self.fields:
            raise ValueError("format = 'csv' needs the fields to write (its columns)")
        return self


class MongoExportJob(JobBase):
    kind: Literal["mongo.export"]
    source: MongoExportSource
    output: MongoExportOutput

    @model_validator(mode="after")
    def _sort_keys_fit_the_fields(self) -> MongoExportJob:
        sort = json.loads(self.source.sort)
        for key, direction in sort.items():
            if direction not in (1, -1):
                raise ValueError(f"sort {key}: the direction must be 1 or -1, not {direction!r}")
            # the export fetches its sort keys to resume after them: a key whose sub-field is
            # projected would collide with that projection
            inner = [f for f in self.output.fields if f.startswith(key + ".")]
            if inner:
                raise ValueError(
                    f"sort key {key} holds output field(s) {', '.join(inner)}: add {key} to fields or sort by the sub-field"
                )
        return self


COLUMN_TYPES = {"auto", "string", "int32", "int64", "double", "decimal", "boolean", "date", "date_go", "binary"}
BINARY_ENCODINGS = {"base64", "hex", "base32"}
# `.TYPE(` where a column's type starts; the last one (after a non-empty name) is the type, and
# the argument runs from there to the closing `)` at the end. Found by one scan (finditer: the
# matches cannot overlap) rather than a pattern with `.+` and `.*` around it, which backtracked
# quadratically on a long field such as "a.b(" repeated.
_TYPE_CALL = re.compile(r"\.(?P<type>[a-z_0-9]++)\(")


def typed_column(text: str) -> tuple[str, str, str]:
    """`name.type(arg)` -> (name, type, arg), as mongoimport's `--columnsHaveTypes` writes them."""
    found = None
    if text.endswith(")") and "\n" not in text:
        for found in _TYPE_CALL.finditer(text, 1):  # noqa: B007 - the last match is the one kept
            pass
    if found is None:
        raise ValueError(f"column {text!r} has no type: write it as NAME.TYPE(ARG), e.g. age.int32()")
    name, kind, arg = text[: found.start()], found["type"], text[found.end() : -1]
    if kind not in COLUMN_TYPES:
        raise ValueError(f"column {text!r}: unknown type {kind!r} (one of {', '.join(sorted(COLUMN_TYPES))})")
    if kind == "binary" and arg not in BINARY_ENCODINGS:
        raise ValueError(f"column {text!r}: binary() takes one of {', '.join(sorted(BINARY_ENCODINGS))}")
    if arg and kind not in ("binary", "date", "date_go"):
        raise ValueError(f"column {text!r}: {kind}() takes no argument")
    return name, kind, arg


class MongoImportInput(TextFile):
    fields: list[str] = Field(default_factory=list)  # CSV column names; given: the file has no header line
    columns_have_types: bool = False  # CSV column names are NAME.TYPE(ARG)
    ignore_blanks: bool = False  # CSV: an empty value leaves the field out

    @model_validator(mode="after")
    def _typed_columns(self) -> MongoImportInput:
        if self.format != "csv" and (self.fields or self.columns_have_types or self.ignore_blanks):
            raise ValueError("fields, columns_have_types and ignore_blanks apply to format = 'csv' only")
        if self.columns_have_types:
            for text in self.fields:
                typed_column(text)
        return self


class MongoImportTarget(MongoServer):
    namespace: str
    mode: Literal["insert", "upsert", "merge"] = "insert"
    upsert_fields: list[str] = Field(default_factory=lambda: ["_id"])  # how upsert/merge find a document

    _ns = field_validator("namespace")(_namespace)


class MongoImportJob(JobBase):
    kind: Literal["mongo.import"]
    input: MongoImportInput
    target: MongoImportTarget
    batch_docs: int = Field(default=1000, ge=1, le=100_000)

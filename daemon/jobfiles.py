"""Reading one job file into a verdict: a spec, or the problems that make it unusable.

The registry (davitd) and `davit validate` both go through `load_job_file`, so the daemon and
the CLI give the same verdict on the same file. Reading is where a hostile file is met first:
whatever goes wrong (cannot read, bad encoding, bad TOML, an invalid spec) becomes problems
naming the field and reason, never an exception.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from domain.errors import FieldProblem, InvalidJob
from domain.jobs import AnyJob, parse_job


@dataclass(frozen=True)
class LoadedJobFile:
    """A job file's verdict. `content_sha256` is empty when the file could not be read."""

    file: str
    content_sha256: str = ""
    spec: AnyJob | None = None
    problems: list[FieldProblem] = field(default_factory=list)


def load_job_file(path: Path) -> LoadedJobFile:
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return LoadedJobFile(file, problems=[FieldProblem("(file)", f"cannot read: {exc.strerror or exc}")])
    content_hash = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        return LoadedJobFile(file, content_hash, problems=[FieldProblem("(file)", f"not UTF-8: {exc.reason}")])
    try:
        return LoadedJobFile(file, content_hash, spec=parse_job(text, file))
    except InvalidJob as exc:
        return LoadedJobFile(file, content_hash, problems=exc.problems)

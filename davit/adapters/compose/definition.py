"""The files a compose project's definition is made of, beyond its compose files.

A project runs from more than the files its containers name: `.env`, the `env_file:` files of
its services, `configs:`/`secrets:`/`label_file:` entries with a `file:`, and the files that
`extends:` and `include:` pull in. `docker compose config` names configs, secrets and label
files by absolute path, and env files too when asked not to interpolate and not to resolve
them; `extends:` and `include:` are merged away by then, so they are read from the compose
files as written (YAML), following them recursively. Only files inside the project directory can be moved (their relative name
is kept); any other is reported so the operator learns it was left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from davit.domain.errors import SourceMissing


class SourceFiles(Protocol):
    """How the definition's files are looked at: on this host, or on a source reached over SSH."""

    def is_file(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str: ...


class LocalFiles:
    def is_file(self, path: str) -> bool:
        return Path(path).is_file()

    def read_text(self, path: str) -> str:
        return Path(path).read_text()


@dataclass
class Definition:
    compose_files: list[str]  # relative names, in the order compose reads them (`-f`)
    files: dict[str, str]  # relative name on the target -> local path; every file to copy
    outside: list[str] = field(default_factory=list)  # referenced, but outside the project directory
    translated: list[str] = field(default_factory=list)  # relative names whose text names the project dir


def project_definition(
    project_name: str,
    working_dir: str,
    config_files: list[str],
    model: dict[str, Any],
    uninterpolated: dict[str, Any],
    files: SourceFiles | None = None,
) -> Definition:
    """What to copy: `model` is the resolved model, `uninterpolated` the one from `config
    --no-interpolate --no-env-resolution` (the only one that still names the env files)."""
    files = files or LocalFiles()
    wd = working_dir.rstrip("/")
    found: dict[str, str] = {}
    outside: list[str] = []
    translated: list[str] = []

    def add(path: str, text: bool) -> str | None:
        real = os.path.normpath(path if os.path.isabs(path) else os.path.join(wd, path))
        if not real.startswith(wd + "/"):
            if real not in outside:
                outside.append(real)
            return None
        rel = real[len(wd) + 1 :]
        found.setdefault(rel, real)
        if text and rel not in translated:
            translated.append(rel)
        return rel

    compose_files = []
    for f in config_files:
        rel = add(f, text=True)
        if rel is None:  # compose files outside the project land beside the others, by name
            outside.remove(os.path.normpath(f))
            rel = Path(f).name
            found[rel] = f
            translated.append(rel)
        compose_files.append(rel)
    for extra in _written_references(config_files, project_name, files):
        add(extra, text=True)
    if files.is_file(f"{wd}/.env"):
        add(f"{wd}/.env", text=True)
    for path in _env_files(uninterpolated, files):
        add(path, text=True)
    for path in _model_references(model):
        add(path, text=False)
    return Definition(compose_files, found, outside, translated)


def _env_files(model: dict[str, Any], files: SourceFiles) -> Iterator[str]:
    for service in (model.get("services") or {}).values():
        for entry in service.get("env_file") or []:
            path = entry.get("path") if isinstance(entry, dict) else entry
            # a missing `required: false` file is fine; an interpolated name cannot be followed
            if isinstance(path, str) and "$" not in path and files.is_file(path):
                yield path


def _model_references(model: dict[str, Any]) -> Iterator[str]:
    """Files the resolved model names: label files, configs and secrets from files."""
    for service in (model.get("services") or {}).values():
        yield from service.get("label_file") or []
    for section in ("configs", "secrets"):
        for spec in (model.get(section) or {}).values():
            if isinstance(spec, dict) and spec.get("file"):
                yield spec["file"]


def _written_references(config_files: Iterable[str], project_name: str, files: SourceFiles) -> Iterator[str]:
    """Files that `extends:` and `include:` name, from the compose files as written, recursively."""
    seen: set[str] = set()
    config_files = [os.path.normpath(f) for f in config_files]
    pending = list(config_files)
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        here = os.path.dirname(current)
        for ref in _references_in(current, project_name, files):
            if "$" in ref:
                continue  # interpolated: compose resolves it; the model's env files cover the common case
            path = os.path.normpath(os.path.join(here, ref))
            if Path(path).suffix in (".yml", ".yaml") and files.is_file(path):
                pending.append(path)
            if path not in config_files:
                yield path


def _references_in(compose_file: str, project_name: str, files: SourceFiles) -> Iterator[str]:
    try:
        doc = yaml.safe_load(files.read_text(compose_file))
    except (OSError, yaml.YAMLError) as exc:
        raise SourceMissing(f"compose project {project_name}", f"cannot read {compose_file}: {exc}") from exc
    if not isinstance(doc, dict):
        return
    for service in (doc.get("services") or {}).values():
        extends = (service or {}).get("extends")
        if isinstance(extends, dict) and isinstance(extends.get("file"), str):
            yield extends["file"]
    for entry in doc.get("include") or []:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            paths = entry.get("path")
            yield from [paths] if isinstance(paths, str) else [p for p in paths or [] if isinstance(p, str)]
            envs = entry.get("env_file")
            yield from [envs] if isinstance(envs, str) else [e for e in envs or [] if isinstance(e, str)]

"""The files a compose project's definition is made of, beyond its compose files.

A project runs from more than the files its containers name: `.env`, the `env_file:` files of
its services, `configs:`/`secrets:`/`label_file:` entries with a `file:`, and the files that
`extends:` and `include:` pull in. `docker compose config` names configs, secrets and label
files by absolute path, and env files too when asked not to interpolate and not to resolve
them; `extends:` and `include:` are merged away by then, so they are read from the compose
files as written (YAML), following them recursively. Only files inside the project directory can be moved (their relative name
is kept); any other is reported so the operator learns it was left behind.

Symlinks: compose follows them, davit does not, by default. A file named inside the project
directory whose resolved path (every symlink followed, on the source host) lies outside the
project directory's resolved path is not read (`symlinked_out`, named in a warning): a link such
as `app.env -> /etc/shadow` would otherwise copy a host file into the target's project (or a
snapshot). `follow_definition_symlinks = true` (compose.migrate) lets the operator allow it:
the file's content is then copied under its name. A `-f` compose file is the operator's own
choice and read as compose reads it. Each name stands for one file: two compose files outside
the project with one file name (they would land on one name beside the others) are refused
(`DefinitionClash`) rather than one silently replacing the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from davit.domain.errors import PermanentError, SourceMissing


class DefinitionClash(PermanentError):
    """Two of the project's files would be copied under one name."""


class SourceFiles(Protocol):
    """How the definition's files are looked at: on this host, or on a source reached over SSH."""

    def is_file(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str: ...

    def realpath(self, path: str) -> str: ...


class LocalFiles:
    def is_file(self, path: str) -> bool:
        return Path(path).is_file()

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def read_text(self, path: str) -> str:
        return Path(path).read_text()


@dataclass
class Definition:
    compose_files: list[str]  # relative names, in the order compose reads them (`-f`)
    files: dict[str, str]  # relative name on the target -> local path; every file to copy
    outside: list[str] = field(default_factory=list)  # referenced, but outside the project directory
    translated: list[str] = field(default_factory=list)  # relative names whose text names the project dir
    # named inside the project, resolved outside it through a symlink: "NAME -> RESOLVED", not read
    symlinked_out: list[str] = field(default_factory=list)


def project_definition(
    project_name: str,
    working_dir: str,
    config_files: list[str],
    model: dict[str, Any],
    uninterpolated: dict[str, Any],
    files: SourceFiles | None = None,
    follow_symlinks: bool = False,
) -> Definition:
    """What to copy: `model` is the resolved model, `uninterpolated` the one from `config
    --no-interpolate --no-env-resolution` (the only one that still names the env files)."""
    files = files or LocalFiles()
    found = _Collector(project_name, working_dir, files, follow_symlinks)
    compose_files = [found.add_compose_file(f) for f in config_files]
    for extra in _written_references(config_files, project_name, files, found.may_parse):
        found.add(extra, text=True)
    if files.is_file(f"{found.wd}/.env"):
        found.add(f"{found.wd}/.env", text=True)
    for path in _env_files(uninterpolated, files):
        found.add(path, text=True)
    for path in _model_references(model):
        found.add(path, text=False)
    return Definition(compose_files, found.files, found.outside, found.translated, found.symlinked_out)


class _Collector:
    """The definition's files as they are found, under the rules of this module's docstring."""

    def __init__(self, project_name: str, working_dir: str, files: SourceFiles, follow_symlinks: bool) -> None:
        self.project_name = project_name
        self.wd = working_dir.rstrip("/")
        self.source = files
        self.follow = follow_symlinks
        self.resolved_wd = files.realpath(self.wd).rstrip("/")
        self.files: dict[str, str] = {}
        self.outside: list[str] = []
        self.translated: list[str] = []
        self.symlinked_out: list[str] = []

    def readable(self, path: str) -> bool:
        """Whether davit reads `path` (named inside the project): not when a symlink takes it out."""
        if self.follow:
            return True
        resolved = self.source.realpath(path)
        if resolved.startswith(self.resolved_wd + "/"):
            return True
        if (note := f"{path} -> {resolved}") not in self.symlinked_out:
            self.symlinked_out.append(note)
        return False

    def may_parse(self, path: str) -> bool:
        """Whether an `extends:`/`include:` file is read for the files it names in turn: one
        named outside the project is (it is only reported), one inside only if `readable`."""
        real = os.path.normpath(path)
        return not real.startswith(self.wd + "/") or self.readable(real)

    def claim(self, rel: str, path: str) -> None:
        # one name, one file: by what the paths resolve to (two names of one file are one file)
        found = self.files
        if rel in found and found[rel] != path and self.source.realpath(found[rel]) != self.source.realpath(path):
            raise DefinitionClash(
                f"compose project {self.project_name}: {found[rel]} and {path} would both be copied as {rel} "
                "(a compose file outside the project directory lands beside the others by its name): rename one"
            )
        found.setdefault(rel, path)

    def add(self, path: str, text: bool) -> None:
        real = os.path.normpath(path if os.path.isabs(path) else os.path.join(self.wd, path))
        if not real.startswith(self.wd + "/"):
            if real not in self.outside:
                self.outside.append(real)
            return
        if not self.readable(real):
            return
        rel = real[len(self.wd) + 1 :]
        self.claim(rel, real)
        if text and rel not in self.translated:
            self.translated.append(rel)

    def add_compose_file(self, path: str) -> str:
        """A `-f` compose file: the operator's own, read as compose reads it; one outside the
        project lands beside the others, by its file name."""
        real = os.path.normpath(path)
        if real.startswith(self.wd + "/"):
            rel = real[len(self.wd) + 1 :]
            self.claim(rel, real)
        else:
            rel = Path(path).name
            self.claim(rel, path)
        if rel not in self.translated:
            self.translated.append(rel)
        return rel


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


def _written_references(
    config_files: Iterable[str], project_name: str, files: SourceFiles, readable: Callable[[str], bool]
) -> Iterator[str]:
    """Files that `extends:` and `include:` name, from the compose files as written, recursively
    (into those inside the project that davit reads: `readable`)."""
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
            if Path(path).suffix in (".yml", ".yaml") and files.is_file(path) and readable(path):
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

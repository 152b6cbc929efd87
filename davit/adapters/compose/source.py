"""The source side of a migration: the compose project on the local engine.

`inspect_project` finds the project by its labels (`com.docker.compose.project`, the working
directory and config files its containers carry), asks `docker compose config --format json`
for the resolved model, and lists what must move: the project's named volumes (read through
their mountpoints: davitd runs on the engine's host), its bind-mounted paths, and the files of
its definition (`davit/adapters/compose/definition.py`).
Moving them is `davit/adapters/compose/pipeline.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from davit.adapters.compose.definition import Definition, project_definition
from davit.adapters.docker.engine import COMPOSE_PROJECT, engine_address, engine_errors, readable_mountpoint
from davit.adapters.docker.engine import VolumeRef as _VolumeRef
from davit.adapters.secrets import redact
from davit.domain.errors import PermanentError, SourceMissing

WORKING_DIR = "com.docker.compose.project.working_dir"
CONFIG_FILES = "com.docker.compose.project.config_files"


class ComposeFailed(PermanentError):
    pass


def compose_cli(engine: str | None, args: list[str], cwd: str | None = None, timeout: float = 300) -> str:
    """Run the local `docker compose` against the job's engine; its stdout."""
    env = {**os.environ, "DOCKER_HOST": engine_address(engine)}
    try:
        done = subprocess.run(
            ["docker", "compose", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComposeFailed(f"docker compose {' '.join(args[:4])} could not run: {exc}") from exc
    if done.returncode != 0:
        raise ComposeFailed(redact(f"docker compose {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-800:]}"))
    return done.stdout


@dataclass
class Item:
    """One piece of data to move: a named volume or a bind-mounted path."""

    id: str
    kind: str  # "volume" | "bind"
    source: str  # local path
    target: str  # the volume's name, or the path on the target host
    key: str = ""  # the volume's key in the compose file
    is_file: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "target": self.target,
            "key": self.key,
            "is_file": self.is_file,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Item:
        return Item(d["id"], d["kind"], d["source"], d["target"], d.get("key", ""), d.get("is_file", False))


@dataclass
class Project:
    name: str
    working_dir: str
    config_files: list[str]
    model: dict[str, Any]
    containers: list[dict[str, str]]
    items: list[Item] = field(default_factory=list)
    definition: Definition | None = None
    bytes: int = 0
    # the model as written (`config --no-interpolate`): where a value was interpolated
    written: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = self.definition or Definition([], {})
        return {
            "name": self.name,
            "working_dir": self.working_dir,
            "config_files": self.config_files,
            "containers": self.containers,
            "items": [i.to_json() for i in self.items],
            "files": d.files,
            "compose_files": d.compose_files,
            "translated": d.translated,
            "outside": d.outside,
            "symlinked_out": d.symlinked_out,
            "bytes": self.bytes,
            "services": sorted(self.model.get("services", {})),
        }


def inspect_project(
    client: docker.DockerClient,
    engine: str | None,
    name: str,
    target_dir: str,
    measure: bool = True,
    follow_symlinks: bool = False,
) -> Project:
    """The project as its containers and `docker compose config` describe it; with `measure`, the
    bytes of its data too (a walk of every item: a backup's store counts them itself)."""
    with engine_errors(f"listing the containers of compose project {name}"):
        containers = client.containers.list(all=True, filters={"label": f"{COMPOSE_PROJECT}={name}"})
    if not containers:
        raise SourceMissing(f"compose project {name}", "no container on the engine carries its label")
    labels = containers[0].labels
    working_dir = labels.get(WORKING_DIR, "")
    config_files = [f for f in labels.get(CONFIG_FILES, "").split(",") if f]
    if not working_dir or not config_files:
        raise SourceMissing(f"compose project {name}", "its containers do not name a working dir and config files")
    missing = [f for f in config_files if not Path(f).is_file()]
    if missing:
        raise SourceMissing(f"compose project {name}", f"config files are gone: {', '.join(missing)}")
    args = ["-p", name, "--project-directory", working_dir]
    for f in config_files:
        args += ["-f", f]
    model = json.loads(compose_cli(engine, [*args, "config", "--format", "json"], cwd=working_dir))
    # The resolved model has env files merged into `environment`; compose names them (by
    # absolute path) only when it does not interpolate either (2.40).
    as_written = json.loads(
        compose_cli(engine, [*args, "config", "--format", "json", "--no-interpolate", "--no-env-resolution"], cwd=working_dir)
    )
    project = Project(
        name,
        working_dir,
        config_files,
        model,
        sorted(({"id": c.id, "name": c.name, "status": c.status} for c in containers), key=lambda c: c["name"]),
    )
    project.written = as_written
    _collect_items(client, project, target_dir)
    project.definition = project_definition(name, working_dir, config_files, model, as_written, None, follow_symlinks)
    project.bytes = sum(_size(Path(i.source)) for i in project.items) if measure else 0
    return project


def _collect_items(client: docker.DockerClient, project: Project, target_dir: str) -> None:
    wd = project.working_dir.rstrip("/")
    for key, spec in sorted((project.model.get("volumes") or {}).items()):
        if (spec or {}).get("external"):
            continue
        volume_name = (spec or {}).get("name") or f"{project.name}_{key}"
        with engine_errors(f"inspecting volume {volume_name}"):
            try:
                attrs = client.volumes.get(volume_name).attrs
            except docker.errors.NotFound:
                continue  # declared but never created: nothing to move
        ref = _VolumeRef(attrs["Name"], attrs.get("Mountpoint") or "", dict(attrs.get("Labels") or {}))
        if readable_mountpoint(ref) is None:
            raise SourceMissing(f"volume {volume_name}", f"its mountpoint {ref.mountpoint} is not readable from here")
        project.items.append(Item(f"volume-{key}", "volume", ref.mountpoint, volume_name, key=key))
    binds = set()
    for service in (project.model.get("services") or {}).values():
        for mount in service.get("volumes") or []:
            if mount.get("type") == "bind" and mount.get("source"):
                binds.add(mount["source"])
    for n, source in enumerate(sorted(binds)):
        path = Path(source)
        if not path.exists():
            continue
        target = target_dir + source[len(wd) :] if source == wd or source.startswith(wd + "/") else source
        project.items.append(Item(f"bind-{n}", "bind", source, target, is_file=path.is_file()))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def compose_args(name: str, info: dict[str, Any]) -> list[str]:
    """`-p NAME -f F...` with the compose files named relative to the project directory."""
    compose_files = info.get("compose_files")
    if compose_files is None:  # recorded by a davit that copied only compose files and `.env`
        compose_files = [rel for rel in info["files"] if rel != ".env"]
    args = ["-p", name]
    for rel in compose_files:
        args += ["-f", rel]
    return args

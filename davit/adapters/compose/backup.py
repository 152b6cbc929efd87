"""compose.backup: a whole compose stack (definition, named volumes, bind data) into one snapshot.

A volume backup's work with a wider walk: `VolumeBackupWork` (and through it `FilesBackupWork`)
does the steps, `stop_containers` -> `store` -> `publish` -> `start_containers` -> `retention`,
with its checkpoints, kill -9 resumes and restarts of stopped containers; this class says what
is walked (`compose/stacktree.py`, which also documents the snapshot's layout) and which
containers are stopped: the project's running containers labelled `davit.stop-during-backup`
(`=true`, or `=GROUP` with `stop_group`), whether they use a volume or only binds.

With `images = true` the images the project's containers run are stored too, each as the
engine's export of it (`compose/stackimages.py`), read again by every backup (an export has no
mtime to compare) but cut into the same chunks, so an unchanged image stores nothing.

`prepare` inspects the project as `compose.migrate` does (`compose/source.py`) and records in
the run's details every part to store (the definition's files, each volume's mountpoint, each
bind source and its type), so a resumed run walks exactly the parts the first attempt chose.
The engine must be reached through a socket on this host: the definition, the bind sources and
the volumes' mountpoints are read here, directly (no helper container yet).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from davit.adapters.compose.binds import bind_sources
from davit.adapters.compose.source import inspect_project
from davit.adapters.compose.stackimages import ImageExport, project_images
from davit.adapters.compose.stacktree import BINDS, DIR_TYPE, FILE_TYPE, VOLUMES, StackParts, Walked, stack_walk
from davit.adapters.docker.backup import MOUNTPOINT, STORE, VolumeBackupWork
from davit.adapters.docker.engine import COMPOSE_PROJECT, engine_address, engine_errors, engine_on_this_host
from davit.adapters.files.backup import Content
from davit.adapters.files.totals import TreeScan
from davit.adapters.files.tree import Skipped
from davit.adapters.repository.treeformat import Entry
from davit.adapters.runwork import RunInputs
from davit.adapters.secrets import redact
from davit.domain.errors import PermanentError
from davit.domain.jobs import VolumeBackupJob
from davit.domain.jobs.compose_backup import ComposeBackupJob
from davit.domain.jobs.docker import STOP_LABEL, VolumeSelection
from davit.domain.pathmap import within
from davit.domain.ports import RunContext

__all__ = ["ComposeBackupWork", "EngineNotLocal"]


class EngineNotLocal(PermanentError):
    """The job's engine is not reached through a socket on this host, where the stack's files are read."""


class ComposeBackupWork(VolumeBackupWork):
    SNAPSHOT_KIND = "compose"

    def __init__(self, inputs: RunInputs[ComposeBackupJob]) -> None:
        spec = inputs.spec
        volume_spec = VolumeBackupJob(
            name=spec.name,
            kind="volume.backup",
            repository=spec.repository,
            engine=spec.engine,
            access=MOUNTPOINT,
            source=VolumeSelection(compose_project=spec.source.project),
            stop_group=spec.stop_group,
            stop_timeout=spec.stop_timeout,
            retention=spec.retention,
        )
        super().__init__(inputs.with_spec(volume_spec))
        self.compose_spec = spec

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        address = engine_address(self.compose_spec.engine)
        if not engine_on_this_host(address):
            raise EngineNotLocal(
                f"compose.backup reads the stack's files and volumes on this host, but the engine {redact(address)} "
                "is not reached through a socket here"
            )
        name = self.compose_spec.source.project
        # the snapshot's walk never follows a symlink (`stacktree.py`: one is stored as the link
        # it is), so a definition file symlinked out of the project is listed to be stored so
        project = inspect_project(self.client, self.compose_spec.engine, name, "", measure=False, follow_symlinks=True)
        definition = project.definition
        assert definition is not None  # inspect_project always collects it
        wd = project.working_dir.rstrip("/")
        volumes = [
            {"key": i.key, "name": i.target, "mountpoint": i.source, "labels": {}, "path": f"{VOLUMES}/{i.key}"}
            for i in project.items
            if i.kind == "volume"
        ]
        binds, skipped = _binds(project.model, wd)
        images = project_images(self.client, name) if self.compose_spec.images else []
        for problem in skipped:
            ctx.warn(f"bind source {problem['source']} is not stored: {problem['reason']}")
        if definition.outside:
            ctx.warn(f"files outside the project directory are referenced, not stored: {', '.join(definition.outside)}")
        parent = self._parent()
        self.details = {
            "engine": redact(address),
            "project": name,
            "working_dir": project.working_dir,
            "config_files": project.config_files,
            "compose_files": definition.compose_files,
            "services": sorted(project.model.get("services") or {}),
            "definition": {"files": definition.files, "outside": definition.outside},
            "volumes": volumes,
            "binds": binds,
            "skipped_binds": skipped,
            "images": images,
            "snapshot_id": self.run_id,
            "parent": parent.id if parent else None,
            "access": MOUNTPOINT,
            "access_reason": "the stack's definition, binds and volumes are read on this host",
        }
        return self.details

    def _containers_to_stop(self) -> list[dict[str, str]]:
        group = self.compose_spec.stop_group or "true"
        labels = [f"{COMPOSE_PROJECT}={self.compose_spec.source.project}", f"{STOP_LABEL}={group}"]
        with engine_errors("listing the project's containers"):
            running = self.client.containers.list(filters={"label": labels, "status": "running"})
        return sorted(({"id": c.id, "name": c.name} for c in running), key=lambda c: c["name"])

    def _parts(self) -> StackParts:
        return StackParts.from_details(self.details)

    def _first_total(self, ctx: RunContext) -> AbstractContextManager[object]:
        return TreeScan(ctx, STORE, lambda: stack_walk(self._parts()))

    def _walk(self) -> Iterator[tuple[Entry, Content | None] | Skipped]:
        walk: Iterator[Walked] = stack_walk(self._parts(), lambda image_id: ImageExport(self.client, image_id))
        return walk

    def _snapshot_source(self) -> dict[str, Any]:
        d = self.details
        return {
            "engine": d["engine"],
            "project": d["project"],
            "working_dir": d["working_dir"],
            "config_files": d["config_files"],
            "compose_files": d["compose_files"],
            "services": d["services"],
            "definition": {"files": sorted(d["definition"]["files"]), "outside": d["definition"]["outside"]},
            "volumes": [{"key": v["key"], "name": v["name"], "path": v["path"]} for v in d["volumes"]],
            "binds": d["binds"],
            "skipped_binds": d["skipped_binds"],
            "images": d.get("images") or [],
        }


def _binds(model: dict[str, Any], working_dir: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The bind sources to store ({source, path, type, in_project, services}, sorted by source,
    named `binds/<n>`) and those that cannot be ({source, reason})."""
    binds: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for source, services in sorted(bind_sources(model).items()):
        if os.path.isdir(source):
            kind = DIR_TYPE
        elif os.path.isfile(source):
            kind = FILE_TYPE
        else:
            why = "it does not exist" if not os.path.lexists(source) else "not a directory or a regular file"
            skipped.append({"source": source, "reason": why})
            continue
        binds.append(
            {
                "source": source,
                "path": f"{BINDS}/{len(binds)}",
                "type": kind,
                "in_project": within(source, working_dir),
                "services": services,
            }
        )
    return binds, skipped

"""What a `compose` snapshot holds, read and checked for `compose.restore` before anything is
done on the target: every name from its manifest and tree is hostile input.

`read_snapshot` walks the tree once (through `treecheck.checked`) and the manifest's `source`
(`stacktree.py` documents both), and refuses, naming the field and the reason (`UnsafeName`,
`CorruptSnapshot`): a project name or volume key compose would not accept or that climbs (`../x`),
a part stored elsewhere than its documented path, a definition file named absolute or with `..`
(it would be written outside the project directory), a bind source that is not an absolute,
normalised path, an image whose file is not named by its ID. What it returns is the restore's
plan of record (recorded at prepare, so a resumed run restores exactly what the first chose):
the items to move as the migration's `Item`s, where each lies in the snapshot, the definition
files with their chunks, the images with theirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from davit.adapters.compose.snapshotstream import snapshot_entries
from davit.adapters.compose.stacktree import BINDS, DEFINITION, DIR_TYPE, FILE_TYPE, IMAGES, VOLUMES
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.snapshots import SnapshotInfo
from davit.adapters.repository.treeformat import DIR, FILE, LINK
from davit.domain.errors import UnsafeName
from davit.domain.jobs.compose_restore import PROJECT_PATTERN
from davit.domain.jobs.docker import VOLUME_NAME_PATTERN
from davit.domain.pathmap import check_path, within

IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
# a name `docker tag` takes (never one starting with `-`, which would read as an option)
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
BIND_PATH = re.compile(rf"^{BINDS}/(0|[1-9][0-9]{{0,5}})$")


@dataclass
class SnapshotPlan:
    """The checked contents of one `compose` snapshot."""

    project: str
    working_dir: str
    config_files: list[str]
    compose_files: list[str]
    services: list[str]
    definition: dict[str, dict[str, Any]]  # rel -> {chunks, size, mode}
    volumes: list[dict[str, str]]  # {key, name, path}
    binds: list[dict[str, Any]]  # {source, path, type, services, bytes}
    images: list[dict[str, Any]]  # {id, refs, path, chunks, size}
    outside: list[str] = field(default_factory=list)
    skipped_binds: list[str] = field(default_factory=list)  # what the operator is told
    unstored: list[str] = field(default_factory=list)  # bind sources the snapshot holds no data of
    skipped_definition: list[str] = field(default_factory=list)
    part_bytes: dict[str, int] = field(default_factory=dict)


def _need(cond: bool, snap: SnapshotInfo, name: str, reason: str) -> None:
    if not cond:
        raise UnsafeName(snap.id, name, reason)


def _path(snap: SnapshotInfo, value: Any, what: str) -> str:
    try:
        return check_path(value, what)
    except ValueError as exc:
        raise UnsafeName(snap.id, str(value)[:200], str(exc)) from None


def relative_name(snap: SnapshotInfo, rel: Any, what: str) -> str:
    """`rel` if it is a relative, normalised name that stays below its directory."""
    _need(isinstance(rel, str) and bool(rel), snap, str(rel), f"{what}: not a name")
    _need(not rel.startswith("/"), snap, rel, f"{what}: an absolute name (it would be written outside the project directory)")
    _path(snap, "/" + rel, what)  # no `..`, `.` or empty component, no control character
    return str(rel)


def read_snapshot(repo: Repository, snap: SnapshotInfo) -> SnapshotPlan:
    src = snap.source if isinstance(snap.source, dict) else {}
    project = str(src.get("project"))
    _need(
        isinstance(project, str) and re.match(PROJECT_PATTERN, project) is not None,
        snap,
        str(project),
        "source.project: not a compose project name",
    )
    wd = _path(snap, src.get("working_dir"), "source.working_dir")
    files: Any = src.get("definition", {}).get("files") if isinstance(src.get("definition"), dict) else None
    _need(isinstance(files, list), snap, "source.definition.files", "missing or not a list")
    names = [relative_name(snap, rel, "source.definition.files") for rel in files]
    compose_files: Any = src.get("compose_files")
    _need(isinstance(compose_files, list) and bool(compose_files), snap, "source.compose_files", "missing or empty")
    for rel in compose_files:
        _need(rel in names, snap, str(rel), "source.compose_files: a compose file the definition does not hold")
    services: Any = src.get("services")
    _need(
        isinstance(services, list) and all(isinstance(s, str) for s in services), snap, "source.services", "not a list of names"
    )

    volumes: list[dict[str, str]] = []
    for v in src.get("volumes") or []:
        key, name, path = v.get("key"), v.get("name"), v.get("path")
        _need(
            isinstance(key, str) and re.match(VOLUME_NAME_PATTERN, key) is not None,
            snap,
            str(key),
            "source.volumes: a volume key compose would not accept",
        )
        _need(
            isinstance(name, str) and re.match(VOLUME_NAME_PATTERN, name) is not None,
            snap,
            str(name),
            "source.volumes: not a volume name",
        )
        _need(path == f"{VOLUMES}/{key}", snap, str(path), f"source.volumes: volume {key} must lie at {VOLUMES}/{key}")
        volumes.append({"key": key, "name": name, "path": path})
    _need(len({v["key"] for v in volumes}) == len(volumes), snap, "source.volumes", "a key named twice")

    binds: list[dict[str, Any]] = []
    for b in src.get("binds") or []:
        source = _path(snap, b.get("source"), "source.binds.source")
        path = b.get("path")
        _need(isinstance(path, str) and BIND_PATH.match(path) is not None, snap, str(path), f"source.binds: not {BINDS}/<n>")
        _need(b.get("type") in (DIR_TYPE, FILE_TYPE), snap, str(b.get("type")), "source.binds.type: not dir or file")
        users = b.get("services")
        _need(isinstance(users, list) and all(isinstance(s, str) for s in users), snap, str(users), "source.binds.services")
        binds.append({"source": source, "path": path, "type": b["type"], "services": list(users)})
    _need(len({b["path"] for b in binds}) == len(binds), snap, "source.binds", "a part named twice")
    _need(len({b["source"] for b in binds}) == len(binds), snap, "source.binds", "a source named twice")

    images: list[dict[str, Any]] = []
    for i in src.get("images") or []:
        image_id, refs = i.get("id"), i.get("refs") or []
        _need(
            isinstance(image_id, str) and IMAGE_ID.match(image_id) is not None,
            snap,
            str(image_id),
            "source.images.id: not an image ID",
        )
        _need(
            i.get("path") == f"{IMAGES}/{image_id.removeprefix('sha256:')}.tar",
            snap,
            str(i.get("path")),
            "source.images.path: not named by its image ID",
        )
        for ref in refs:
            _need(
                isinstance(ref, str) and IMAGE_REF.match(ref) is not None, snap, str(ref), "source.images.refs: not an image name"
            )
        images.append({"id": image_id, "refs": list(refs), "path": i["path"]})

    plan = SnapshotPlan(
        project=project,
        working_dir=wd,
        config_files=[str(f) for f in src.get("config_files") or []],
        compose_files=list(compose_files),
        services=list(services),
        definition={},
        volumes=volumes,
        binds=binds,
        images=images,
        outside=[str(o) for o in (src.get("definition", {}).get("outside") or [])],
    )
    for skipped in src.get("skipped_binds") or []:
        source = _path(snap, skipped.get("source"), "source.skipped_binds.source")
        plan.unstored.append(source)
        plan.skipped_binds.append(f"{source} (not stored by the backup: {str(skipped.get('reason'))[:200]})")
    _read_tree(repo, snap, plan, set(names))
    return plan


def _read_tree(repo: Repository, snap: SnapshotInfo, plan: SnapshotPlan, names: set[str]) -> None:
    """One pass over the checked tree: each part's type and size, each definition file's chunks."""
    parts = {v["path"]: DIR for v in plan.volumes}
    parts.update({b["path"]: DIR if b["type"] == DIR_TYPE else FILE for b in plan.binds})
    parts.update({i["path"]: FILE for i in plan.images})
    seen: dict[str, str] = {}
    sizes = dict.fromkeys(parts, 0)
    files: dict[str, Any] = {}
    for entry in snapshot_entries(repo, snap):
        top = "/".join(entry.path.split("/")[:2])
        if entry.path in parts:
            seen[entry.path] = entry.type
        if top in sizes and entry.type == FILE and entry.hardlink_to is None:
            sizes[top] += entry.size
        if entry.path.startswith(DEFINITION + "/"):
            rel = entry.path[len(DEFINITION) + 1 :]
            if rel in names:
                if entry.type == FILE:
                    files[rel] = {"chunks": list(entry.chunks), "size": entry.size, "mode": entry.mode & 0o777}
                elif entry.type == LINK:
                    plan.skipped_definition.append(f"{rel} (a symlink to {entry.target!r}; not written)")
        if entry.path in parts and entry.type == FILE and entry.path.startswith(IMAGES + "/"):
            for image in plan.images:
                if image["path"] == entry.path:
                    image.update(chunks=list(entry.chunks), size=entry.size)
    _settle(snap, plan, names, files, seen, parts, sizes)


def _settle(
    snap: SnapshotInfo,
    plan: SnapshotPlan,
    names: set[str],
    files: dict[str, Any],
    seen: dict[str, str],
    parts: dict[str, str],
    sizes: dict[str, int],
) -> None:
    """What the tree pass found, held against what the manifest says."""
    for rel in plan.compose_files:
        _need(rel in files, snap, f"{DEFINITION}/{rel}", "a compose file the snapshot does not hold as a file")
    plan.definition = {rel: files[rel] for rel in sorted(files)}
    plan.skipped_definition += [
        f"{rel} (not in the snapshot)" for rel in sorted(names - set(files)) if not any(rel in s for s in plan.skipped_definition)
    ]
    for v in plan.volumes:
        _need(seen.get(v["path"]) == DIR, snap, v["path"], "the volume's directory is not in the snapshot")
    kept = []
    for b in plan.binds:
        if seen.get(b["path"]) != parts[b["path"]]:
            plan.skipped_binds.append(f"{b['source']} (not stored whole in the snapshot)")
            plan.unstored.append(b["source"])
            continue
        b["bytes"] = sizes[b["path"]]
        kept.append(b)
    plan.binds = kept
    for i in plan.images:
        _need(seen.get(i["path"]) == FILE and "chunks" in i, snap, i["path"], "the image's export is not in the snapshot")
    plan.part_bytes = sizes
    for b in plan.binds:
        b["in_project"] = within(b["source"], plan.working_dir)

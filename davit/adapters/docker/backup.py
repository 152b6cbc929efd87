"""volume.backup: selected Docker volumes into one snapshot, with the files machinery.

The snapshot's tree has one top-level directory per volume (named after it), holding the
volume's content; chunking, zstd, sha256, packs, the files cache and checkpoints are those of
`files.backup` (`FilesBackupWork` with a walk over the volumes' mountpoints instead of one
directory). Steps: `stop_containers` (record, then stop, the running containers labelled
`davit.stop-during-backup` that use a selected volume) -> `store` -> `publish` ->
`start_containers` -> `retention`. Starting them again is a step, so a resumed run does it;
a run that fails or is stopped inside `run` starts them again on its way out (without
completing the step, so a resumed run stops them again before storing more).

Access (fixed at prepare and recorded): through the volumes' mountpoints when this process
can read them, else (or with `access = "helper"`) through a helper container whose archive
stream is chunked like files (`adapters.docker.archive`); both give the same tree lines, so
their snapshots are interchangeable. A resumed helper backup streams again and passes over
what the staging tree holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import docker

from davit.adapters.docker.archive import volume_archive_entries
from davit.adapters.docker.engine import (
    VolumeRef,
    connect,
    containers_to_stop,
    engine_address,
    engine_on_this_host,
    readable_mountpoint,
    select_volumes,
    start_containers,
    stop_containers,
)
from davit.adapters.docker.helper import (
    HelperAccessNotAvailable,
    LazyHelper,
    helper_container,
    helper_name,
    remove_helper,
    require_image,
)
from davit.adapters.docker.totals import EngineVolumeSizes
from davit.adapters.files.backup import Content, FilesBackupWork
from davit.adapters.files.totals import TreeScan
from davit.adapters.files.tree import Skipped, WalkedFile, walk_root
from davit.adapters.repository.treeformat import DIR, Entry, walk_key
from davit.adapters.runwork import RunInputs
from davit.adapters.secrets import redact
from davit.adapters.steps import Step, publish_step, retention_steps, run_steps, step_names
from davit.domain.errors import RunStopped
from davit.domain.jobs import FilesBackupJob, VolumeBackupJob
from davit.domain.jobs.files import FilesBackupSource
from davit.domain.ports import RunContext

STOP, STORE, START = "stop_containers", "store", "start_containers"
MOUNTPOINT, HELPER = "mountpoint", "helper"
__all__ = ["HelperAccessNotAvailable", "VolumeBackupWork", "walk_volumes"]


def walk_volumes(volumes: list[tuple[str, Path]], exclude: list[str]) -> Iterator[tuple[Entry, WalkedFile | None] | Skipped]:
    """The walk of a virtual root whose children are the volumes (sorted by name), each walked
    like a files source: listed through descriptors, so a link a container plants in its volume
    is stored as a link, never followed onto the host."""
    yield Entry(path=".", type=DIR, mode=0o755, mtime_ns=0), None
    for name, root in sorted(volumes):
        yield from walk_root(root, name, exclude)


class VolumeBackupWork(FilesBackupWork):
    WALKS_AHEAD = False  # through a helper, the walk yields a stream positioned at each entry

    def __init__(self, inputs: RunInputs[VolumeBackupJob]) -> None:
        spec = inputs.spec
        files_spec = FilesBackupJob(
            name=spec.name,
            kind="files.backup",
            repository=spec.repository,
            source=FilesBackupSource(path="/", exclude=list(spec.source.exclude)),
            retention=spec.retention,
        )
        super().__init__(inputs.with_spec(files_spec))
        self.volume_spec = spec
        self._client: docker.DockerClient | None = None
        self._helper: Any = None
        self._links: LazyHelper | None = None
        self._resume_after: tuple[str, ...] | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self.volume_spec.engine)
        return self._client

    def plan(self) -> list[str]:
        return [STOP, *step_names(self.steps())]

    def steps(self, stopped: Sequence[dict[str, str]] = ()) -> list[Step]:
        """The steps after `stop_containers`: the containers (`stopped`) are started again between
        publish and retention."""
        return [
            Step(STORE, self._store),
            publish_step(self._publish),
            Step(START, lambda ctx: self._start(ctx, stopped)),
            *retention_steps(self),
        ]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        volumes = select_volumes(self.client, self.volume_spec.source)
        access, why = self._access(volumes)
        parent = self._parent()
        self.details = {
            "engine": redact(engine_address(self.volume_spec.engine)),
            "volumes": [v.to_json() for v in volumes],
            "snapshot_id": self.run_id,
            "parent": parent.id if parent else None,
            "access": access,
            "access_reason": why,
        }
        return self.details

    def _access(self, volumes: list[VolumeRef]) -> tuple[str, str]:
        """How the volumes are read (`mountpoint` or `helper`) and why, for the run's details."""
        address = engine_address(self.volume_spec.engine)
        engine = redact(address)
        if not engine_on_this_host(address):
            unreadable = [v.name for v in volumes]
            why = f"the engine {engine} is not reached through a socket on this host"
        else:
            unreadable = [v.name for v in volumes if readable_mountpoint(v) is None]
            why = f"the mountpoints of {', '.join(unreadable)} are not readable from this host"
        wanted = self.volume_spec.access
        if wanted == MOUNTPOINT and unreadable:
            raise HelperAccessNotAvailable(
                f"volumes {', '.join(unreadable)} on {engine} cannot be read through their mountpoint from this "
                f'host ({why}; access = "mountpoint"); set access = "auto" and a helper_image to read them through a '
                "helper container"
            )
        if wanted == HELPER or unreadable:
            require_image(self.client, self.volume_spec.helper_image, engine)
            return HELPER, 'access = "helper"' if wanted == HELPER else why
        return MOUNTPOINT, "the engine runs on this host and every mountpoint is readable"

    def run(self, ctx: RunContext) -> None:
        if self._through_helper():
            # A crashed run's helper, should the store step not run again to remove it.
            for role in ("backup", "links"):
                remove_helper(self.client, helper_name(self.run_id, role))
        stopped = self._stop(ctx)
        steps = self.steps(stopped)
        while_stopped = step_names(steps).index(START)
        try:
            with self.held_through_publish(ctx):
                run_steps(ctx, steps[:while_stopped])
        except BaseException as exc:
            if stopped and not ctx.step_done(START):
                self._start_after_failure(ctx, stopped, exc)
            raise
        run_steps(ctx, steps[while_stopped:])

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        summary = super().finish(ctx)
        if self._client is not None:
            self._client.close()
        return summary

    # --- the containers that must be quiet -----------------------------------------------------

    def _stop(self, ctx: RunContext) -> list[dict[str, str]]:
        """Stop the labelled containers; on a resumed run, stop again those recorded the first
        time (a run that stopped on failure started them again)."""
        if ctx.step_done(START):
            return list((ctx.cursor(STOP) or {}).get("containers", []))
        cursor = ctx.cursor(STOP)
        if cursor is None:
            ctx.step_started(STOP)
            containers = self._containers_to_stop()
            # Recorded before stopping: whatever happens next, the run knows what to start.
            ctx.checkpoint(STOP, {"containers": containers}, items_done=len(containers))
        else:
            containers = list(cursor.get("containers", []))
        stop_containers(self.client, containers, self.volume_spec.stop_timeout)
        if not ctx.step_done(STOP):
            ctx.step_completed(STOP, {"stopped": [c["name"] for c in containers]})
        return containers

    def _containers_to_stop(self) -> list[dict[str, str]]:
        """The running containers to stop for this backup ([{"id", "name"}]): those labelled for
        it that use a selected volume (a compose stack's backup stops those of its project)."""
        names = [v["name"] for v in self.details["volumes"]]
        return containers_to_stop(self.client, names, self.volume_spec.stop_group)

    def _start(self, ctx: RunContext, stopped: Sequence[dict[str, str]]) -> dict[str, Any]:
        problems = start_containers(self.client, list(stopped))
        for problem in problems:
            ctx.warn(problem, START)
        return {"started": [c["name"] for c in stopped], "problems": problems}

    def _start_after_failure(self, ctx: RunContext, containers: list[dict[str, str]], cause: BaseException) -> None:
        why = "the run is stopping" if isinstance(cause, RunStopped) else f"the run failed ({type(cause).__name__})"
        problems = start_containers(self.client, containers)
        ctx.checkpoint(START, {"started_after_failure": [c["name"] for c in containers], "problems": problems})
        ctx.warn(f"started {len(containers) - len(problems)} of {len(containers)} stopped containers again: {why}", START)

    # --- store and publish: the files machinery over the volumes' mountpoints or a helper ------

    def _through_helper(self) -> bool:
        return self.details.get("access") == HELPER

    def _store(self, ctx: RunContext) -> dict[str, Any]:
        if not self._through_helper():
            return super()._store(ctx)
        last = (ctx.cursor(STORE) or {}).get("last")
        self._resume_after = walk_key(last) if last is not None else None
        mounts = {v["name"]: "ro" for v in self.details["volumes"]}
        image = str(self.volume_spec.helper_image)
        with (
            helper_container(self.client, image, helper_name(self.run_id, "backup"), self.run_id, mounts) as helper,
            LazyHelper(self.client, image, helper_name(self.run_id, "links"), self.run_id, mounts) as links,
        ):
            self._helper, self._links = helper, links
            try:
                return super()._store(ctx)
            finally:
                self._helper = self._links = None

    def _volume_roots(self) -> list[tuple[str, Path]]:
        roots = []
        for d in self.details["volumes"]:
            ref = VolumeRef.from_json(d)
            path = readable_mountpoint(ref)
            if path is None:
                raise HelperAccessNotAvailable(f"volume {ref.name}: mountpoint {ref.mountpoint} is not readable here")
            roots.append((ref.name, path))
        return roots

    def _first_total(self, ctx: RunContext) -> AbstractContextManager[object]:
        """A first backup's total (`docker/totals.py`): a scan of the mountpoints, or through a
        helper container the engine's volume sizes."""
        if not self._through_helper():
            return TreeScan(ctx, STORE, lambda: walk_volumes(self._volume_roots(), list(self.spec.source.exclude)))
        names = [v["name"] for v in self.details["volumes"]]
        return EngineVolumeSizes(ctx, STORE, self.volume_spec.engine, names)

    def _walk(self) -> Iterator[tuple[Entry, Content | None] | Skipped]:
        if self._helper is None:
            return walk_volumes(self._volume_roots(), list(self.spec.source.exclude))
        return self._walk_helper()

    def _walk_helper(self) -> Iterator[tuple[Entry, Content | None] | Skipped]:
        yield Entry(path=".", type=DIR, mode=0o755, mtime_ns=0), None
        after = self._resume_after
        for name in sorted(v["name"] for v in self.details["volumes"]):
            if after and (name,) < after[:1]:
                continue  # the staging tree holds all of it: do not stream it again
            assert self._links is not None
            yield from volume_archive_entries(self._helper, name, list(self.spec.source.exclude), self._links.get, after)

    SNAPSHOT_KIND = "volumes"

    def _snapshot_source(self) -> dict[str, Any]:
        return {
            "engine": self.details["engine"],
            "volumes": [{"name": v["name"], "labels": v["labels"]} for v in self.details["volumes"]],
        }

    def _parent_id(self) -> str | None:
        parent: str | None = self.details.get("parent")
        return parent

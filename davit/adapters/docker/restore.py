"""volume.restore: one volume of a `volume.backup` snapshot into a Docker volume.

The target volume is created if missing (with the job's labels); an existing one is used only
if it is empty or `overwrite = true`. Writing is `files.restore` (`FilesRestoreWork`): chunks
verified before they reach the volume, checkpoints after a `syncfs`, directory metadata
last, a resumed run rewriting at most the file in flight; its entries are the snapshot's
subtree of the chosen volume, re-rooted at the volume's mountpoint. The volume and its
mountpoint are fixed at prepare time and recorded, so a resumed run writes to the same one.

When the mountpoint cannot be written from here (the engine runs elsewhere) or `access =
"helper"`, the same entries go through a helper container instead (`helper_restore`), with
the same steps, checkpoints and final check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from davit.adapters.docker.engine import (
    VolumeRef,
    connect,
    engine_address,
    engine_errors,
    engine_on_this_host,
    readable_mountpoint,
)
from davit.adapters.docker.helper import (
    RESTORE_TOOLS,
    HelperAccessNotAvailable,
    LazyHelper,
    helper_container,
    helper_name,
    remove_helper,
    require_image,
    require_tools,
)
from davit.adapters.docker.helper_restore import (
    METADATA,
    RESTORE,
    differences,
    restore_directories,
    restore_entries,
    volume_holds_data,
)
from davit.adapters.docker.totals import entry_totals
from davit.adapters.files.restore import FilesRestoreWork
from davit.adapters.files.treecheck import checked, parsed
from davit.adapters.files.treekinds import VOLUME_RESTORE_KINDS, require_kind
from davit.adapters.repository.repository import SnapshotInfo
from davit.adapters.repository.treeformat import Entry
from davit.adapters.runwork import RunInputs
from davit.adapters.secrets import redact
from davit.adapters.steps import Step, run_steps
from davit.domain.errors import PermanentError, SnapshotNotFound, TargetNotEmpty
from davit.domain.jobs import FilesRestoreJob, VolumeRestoreJob
from davit.domain.jobs.files import FilesRestoreTarget
from davit.domain.ports import RunContext
from davit.domain.progress import plausible


def volume_entries(entries: Iterator[Entry], volume: str) -> Iterator[Entry]:
    """The entries under top-level directory `volume`, re-rooted ("volume/x" -> "x"), hard
    links too (one to a path outside the volume is restored as a plain file)."""
    prefix = volume + "/"
    for entry in entries:
        if entry.path == volume:
            entry.path = "."
        elif entry.path.startswith(prefix):
            entry.path = entry.path[len(prefix) :]
        else:
            continue
        if entry.hardlink_to is not None:
            entry.hardlink_to = entry.hardlink_to[len(prefix) :] if entry.hardlink_to.startswith(prefix) else None
        yield entry


class VolumeRestoreWork(FilesRestoreWork):
    def __init__(self, inputs: RunInputs[VolumeRestoreJob]) -> None:
        spec = inputs.spec
        mountpoint = str(inputs.details.get("mountpoint") or "/nonexistent")
        files_spec = FilesRestoreJob(
            name=spec.name,
            kind="files.restore",
            repository=spec.repository,
            source=spec.source,
            target=FilesRestoreTarget(path=mountpoint, overwrite=True),
        )
        super().__init__(inputs.with_spec(files_spec))
        self.volume_spec = spec
        self.overwrite = spec.target.overwrite  # what may be replaced in the volume (see davit/adapters/files/confined.py)

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        snap = self.repo.resolve(self.volume_spec.source.snapshot, self.volume_spec.source.job)
        require_kind(snap.id, snap.kind, snap.job, VOLUME_RESTORE_KINDS, "volume.restore")
        names = [str(v.get("name")) for v in snap.source.get("volumes", [])]
        # the whole subtree is checked before anything is written: a corrupt one fails here
        volume_bytes, volume_items = entry_totals(self._volume_entries(snap, self.volume_spec.volume))
        if not volume_items:
            raise SnapshotNotFound(
                f"volume {self.volume_spec.volume} in snapshot {snap.id}" + (f" (it holds {', '.join(names)})" if names else "")
            )
        engine = redact(engine_address(self.volume_spec.engine))
        client = connect(self.volume_spec.engine)
        try:
            volume = self._target_volume(client)
            local = engine_on_this_host(engine_address(self.volume_spec.engine))
            path = _writable_mountpoint(volume) if local else None
            if self.volume_spec.access == "mountpoint" and path is None:
                where = "is not writable from this host" if local else "belongs to an engine not on this host"
                raise HelperAccessNotAvailable(
                    f"volume {volume.name}: mountpoint {volume.mountpoint} on {engine} {where} "
                    '(access = "mountpoint"); set access = "auto" and a helper_image to restore through a '
                    "helper container"
                )
            through_helper = path is None or self.volume_spec.access == "helper"
            if self.volume_spec.access == "helper":
                why = 'access = "helper"'
            elif not local:
                why = f"the engine {engine} is not reached through a socket on this host"
            elif path is None:
                why = f"the mountpoint of {volume.name} is not writable from this host"
            else:
                why = "the engine runs on this host and the mountpoint is writable"
            if through_helper:
                image = require_image(client, self.volume_spec.helper_image, engine)
                require_tools(client, image, engine, RESTORE_TOOLS, self.run_id)
                with helper_container(
                    client,
                    str(self.volume_spec.helper_image),
                    helper_name(self.run_id, "check"),
                    self.run_id,
                    {volume.name: "ro"},
                ) as helper:
                    holds_data = volume_holds_data(helper, volume.name)
            else:
                holds_data = path is not None and any(path.iterdir())
        finally:
            client.close()
        if holds_data and not self.volume_spec.target.overwrite:
            raise TargetNotEmpty(f"volume {volume.name}")
        self.details = {
            "snapshot_id": snap.id,
            "volume": self.volume_spec.volume,
            "target_volume": volume.name,
            "mountpoint": volume.mountpoint if through_helper else str(path),
            "engine": engine,
            "bytes": snap.stats.get("bytes", 0),
            # what this volume's restore amounts to (its progress total; absent in older runs)
            "volume_bytes": volume_bytes,
            "volume_items": volume_items,
            "access": "helper" if through_helper else "mountpoint",
            "access_reason": why,
        }
        if path is not None and not through_helper:
            self.target = path
        return self.details

    def _target_volume(self, client: docker.DockerClient) -> VolumeRef:
        target = self.volume_spec.target
        with engine_errors(f"preparing volume {target.volume}"):
            try:
                attrs = client.volumes.get(target.volume).attrs
            except docker.errors.NotFound:
                attrs = client.volumes.create(target.volume, labels=dict(target.labels)).attrs
        return VolumeRef(attrs["Name"], attrs.get("Mountpoint") or "", dict(attrs.get("Labels") or {}))

    def run(self, ctx: RunContext) -> None:
        if self._through_helper():
            self._run_through_helper(ctx)
            return
        self.target = Path(self.details["mountpoint"])
        super().run(ctx)

    def _tell_total(self, ctx: RunContext, snap: SnapshotInfo) -> None:
        """The chosen volume's figures as prepare counted them (the snapshot's `stats` cover
        every volume it holds); a run prepared before they were recorded has none."""
        size, items = plausible(self.details.get("volume_bytes")), plausible(self.details.get("volume_items"))
        if size is not None and items is not None:
            ctx.step_total(RESTORE, bytes_total=size, items_total=items)

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        if self._through_helper():
            return self._check_through_helper()
        self.target = Path(self.details["mountpoint"])
        summary = super().finish(ctx)
        return {**summary, "target": self.details["target_volume"], "volume": self.details["volume"]}

    # --- through a helper container ------------------------------------------------------------

    def _through_helper(self) -> bool:
        return self.details.get("access") == "helper"

    def _helper(self, client: docker.DockerClient, role: str, mode: str) -> Any:
        return helper_container(
            client,
            str(self.volume_spec.helper_image),
            helper_name(self.run_id, role),
            self.run_id,
            {self.details["target_volume"]: mode},
        )

    def _run_through_helper(self, ctx: RunContext) -> None:
        snap = self.repo.resolve(self.details["snapshot_id"])
        volume = self.details["target_volume"]
        self._tell_total(ctx, snap)
        client = connect(self.volume_spec.engine)
        try:
            for role in ("check", "links"):  # what a crash during prepare's look or a check left
                remove_helper(client, helper_name(self.run_id, role))
            with self._helper(client, "restore", "rw") as helper:
                run_steps(
                    ctx,
                    [
                        Step(
                            RESTORE,
                            lambda ctx: restore_entries(ctx, self.repo, self.tuning, helper, volume, lambda: self._entries(snap)),
                        ),
                        Step(METADATA, lambda _ctx: restore_directories(helper, volume, self._entries(snap))),
                    ],
                )
        finally:
            client.close()

    def _check_through_helper(self) -> dict[str, Any]:
        snap = self.repo.resolve(self.details["snapshot_id"])
        client = connect(self.volume_spec.engine)
        try:
            mounts = {self.details["target_volume"]: "ro"}
            with (
                self._helper(client, "check", "ro") as helper,
                LazyHelper(
                    client, str(self.volume_spec.helper_image), helper_name(self.run_id, "links"), self.run_id, mounts
                ) as links,
            ):
                count, problems = differences(helper, links.get, self.details["target_volume"], self._entries(snap))
        finally:
            client.close()
        if problems:
            raise PermanentError(f"restored volume differs from snapshot: {'; '.join(problems[:5])}")
        return {
            "snapshot_id": snap.id,
            "target": self.details["target_volume"],
            "volume": self.details["volume"],
            "entries": count,
        }

    def _entries(self, snap: SnapshotInfo) -> Iterator[Entry]:
        return self._volume_entries(snap, self.details["volume"])

    def _volume_entries(self, snap: SnapshotInfo, volume: str) -> Iterator[Entry]:
        """The volume's entries, re-rooted, each checked (`treecheck`) before it is used, here and
        through a helper container alike."""
        return checked(volume_entries(parsed(self.repo.open_tree(snap), snap.id), volume), snap.id)


def _writable_mountpoint(volume: VolumeRef) -> Path | None:
    path = readable_mountpoint(volume)
    return path if path is not None and os.access(path, os.W_OK) else None

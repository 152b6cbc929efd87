"""volume.restore: one volume of a `volume.backup` snapshot into a Docker volume.

The target volume is created if missing (with the job's labels); an existing one is used only
if it is empty or `overwrite = true`. Writing is `files.restore` (`FilesRestoreWork`): chunks
verified before they reach the volume, checkpoints after a `syncfs`, directory metadata
last, a resumed run rewriting at most the file in flight; its entries are the snapshot's
subtree of the chosen volume, re-rooted at the volume's mountpoint. The volume and its
mountpoint are fixed at prepare time and recorded, so a resumed run writes to the same one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from adapters.docker.backup import HelperAccessNotAvailable
from adapters.docker.engine import VolumeRef, connect, engine_address, engine_errors, readable_mountpoint
from adapters.files.restore import FilesRestoreWork
from adapters.files.tree import Entry, read_tree_zst
from adapters.repository.repository import Repository, SnapshotInfo
from adapters.repository.tuning import Tuning
from adapters.secrets import redact
from domain.errors import SnapshotNotFound, TargetNotEmpty
from domain.jobs import FilesRestoreJob, VolumeRestoreJob
from domain.jobs.files import FilesRestoreTarget
from domain.ports import RunContext


def volume_entries(entries: Iterator[Entry], volume: str) -> Iterator[Entry]:
    """The entries under top-level directory `volume`, re-rooted ("volume/x" -> "x")."""
    prefix = volume + "/"
    for entry in entries:
        if entry.path == volume:
            entry.path = "."
            yield entry
        elif entry.path.startswith(prefix):
            entry.path = entry.path[len(prefix):]
            yield entry


class VolumeRestoreWork(FilesRestoreWork):
    def __init__(self, spec: VolumeRestoreJob, repo: Repository, run_id: str, tuning: Tuning,
                 details: dict[str, Any]) -> None:
        mountpoint = str(details.get("mountpoint") or "/nonexistent")
        files_spec = FilesRestoreJob(name=spec.name, kind="files.restore", repository=spec.repository,
                                     source=spec.source, target=FilesRestoreTarget(path=mountpoint, overwrite=True))
        super().__init__(files_spec, repo, run_id, tuning, details)
        self.volume_spec = spec

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        snap = self.repo.resolve(self.volume_spec.source.snapshot, self.volume_spec.source.job)
        names = [str(v.get("name")) for v in snap.source.get("volumes", [])]
        client = connect(self.volume_spec.engine)
        try:
            volume = self._target_volume(client)
        finally:
            client.close()
        path = readable_mountpoint(volume)
        if path is None:
            raise HelperAccessNotAvailable(
                f"volume {volume.name}: mountpoint {volume.mountpoint} is not writable from this host; restoring "
                "through a helper container is not implemented yet: run davitd on the engine's host")
        if not any(True for _ in volume_entries(read_tree_zst(self.repo.tree_bytes(snap)), self.volume_spec.volume)):
            raise SnapshotNotFound(f"volume {self.volume_spec.volume} in snapshot {snap.id}"
                                   + (f" (it holds {', '.join(names)})" if names else ""))
        if any(path.iterdir()) and not self.volume_spec.target.overwrite:
            raise TargetNotEmpty(f"volume {volume.name}")
        self.target = path
        self.details = {"snapshot_id": snap.id, "volume": self.volume_spec.volume, "target_volume": volume.name,
                        "mountpoint": str(path), "engine": redact(engine_address(self.volume_spec.engine)),
                        "bytes": snap.stats.get("bytes", 0)}
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
        self.target = Path(self.details["mountpoint"])
        super().run(ctx)

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        self.target = Path(self.details["mountpoint"])
        summary = super().finish(ctx)
        return {**summary, "target": self.details["target_volume"], "volume": self.details["volume"]}

    def _entries(self, snap: SnapshotInfo) -> Iterator[Entry]:
        return volume_entries(read_tree_zst(self.repo.tree_bytes(snap)), self.details["volume"])

"""Pre-flight checks of the volume kinds (`davit check`), through the adapter's own engine
calls (`engine.connect`, `select_volumes`, `require_image`; their errors translated there).

Read-only: the engine is pinged and its version read, volumes and images looked up, mountpoints
tested for reading with `access`. No container is made, started or stopped.
"""

from __future__ import annotations

import os

import docker

from davit.adapters.docker.engine import connect, engine_address, engine_on_this_host, readable_mountpoint, select_volumes
from davit.adapters.docker.helper import require_image
from davit.adapters.files.treekinds import VOLUME_RESTORE_KINDS
from davit.adapters.secrets import redact
from davit.domain.checks import CheckInputs, Checklist
from davit.domain.jobs import VolumeBackupJob, VolumeRestoreJob
from davit.domain.jobs.docker import EngineSettings

LISTED = 5


def _engine(cl: Checklist, subject: str, spec: EngineSettings) -> docker.DockerClient | None:
    engine = redact(engine_address(spec.engine))
    with cl.check(subject, "engine") as c:
        client = connect(spec.engine)
        version = client.version().get("Version", "?")
        c.ok(f"{engine}: Docker Engine {version} (as uid {os.geteuid()})")
    return client if c.passed else None


def _helper(cl: Checklist, subject: str, client: docker.DockerClient, spec: EngineSettings, needed: bool) -> None:
    engine = redact(engine_address(spec.engine))
    if not needed and not spec.helper_image:
        return
    with cl.check(subject, "helper image") as c:
        c.ok(require_image(client, spec.helper_image, engine))


def backup_checks(inputs: CheckInputs) -> None:
    spec: VolumeBackupJob = inputs.spec
    cl = inputs.checklist
    client = _engine(cl, "source", spec)
    if client is not None:
        try:
            with cl.check("source", "volumes") as c:
                volumes = select_volumes(client, spec.source)
                c.ok(f"{len(volumes)}: {', '.join(v.name for v in volumes[:LISTED])}{' ...' if len(volumes) > LISTED else ''}")
            if c.passed:
                local = engine_on_this_host(engine_address(spec.engine))
                unreadable = [v.name for v in volumes if not local or readable_mountpoint(v) is None]
                with cl.check("source", "access") as c:
                    if spec.access == "mountpoint" and unreadable:
                        c.fail(f"the mountpoints of {', '.join(unreadable[:LISTED])} are not readable here")
                    else:
                        c.ok("through a helper container" if unreadable or spec.access == "helper" else "through the mountpoints")
                _helper(cl, "source", client, spec, bool(unreadable) or spec.access == "helper")
        finally:
            client.close()
    inputs.check_repository(spec.repository)


def restore_checks(inputs: CheckInputs) -> None:
    spec: VolumeRestoreJob = inputs.spec
    cl = inputs.checklist
    inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, VOLUME_RESTORE_KINDS)
    client = _engine(cl, "target", spec)
    if client is None:
        return
    try:
        with cl.check("target", "volume") as c:
            try:
                client.volumes.get(spec.target.volume)
                exists = True
            except docker.errors.NotFound:
                exists = False
            if exists and not spec.target.overwrite:
                c.fail(f"volume {spec.target.volume} exists and overwrite is false")
            else:
                c.ok(f"volume {spec.target.volume} {'exists (overwrite)' if exists else 'will be created'}")
        _helper(cl, "target", client, spec, spec.access != "mountpoint")
    finally:
        client.close()

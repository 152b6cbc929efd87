"""Pre-flight checks of `compose.migrate` and `compose.backup` (`davit check`): the source project on the local
engine, and the target host over SSH, through the adapters' own calls (`inspect_project`, the
SSH `connect` that verifies the host key against the job's known_hosts and never accepts a new
one, `missing_host_tools`, `missing_helper_tools`), and the images a run would send (as its
pre-flight plans them, `images.plan`: name, ID, size), whose bytes count in the free space.

Read-only: on the target only `docker version`, `docker image ls`/`inspect`, `test`, `df` and
`ls` run; nothing is created there (the migration's own pre-flight, with its stricter verdicts on
what is in the way, still runs when the migration starts).
"""

from __future__ import annotations

import shlex
from typing import Any, cast

from davit.adapters.compose import images as imgs
from davit.adapters.compose.images import source_images
from davit.adapters.compose.localhost import LocalAddress
from davit.adapters.compose.localhost import connect as local_connect
from davit.adapters.compose.source import inspect_project
from davit.adapters.compose.sshsource_checks import remote_source_checks
from davit.adapters.compose.target import TargetLayout, missing_helper_tools, missing_host_tools
from davit.adapters.docker.engine import connect as engine_connect
from davit.adapters.docker.engine import engine_address, engine_on_this_host
from davit.adapters.secrets import redact
from davit.adapters.ssh.remote import RemoteHost, SshAddress
from davit.adapters.ssh.remote import connect as ssh_connect
from davit.domain.checks import CheckInputs, Checklist, Verdict
from davit.domain.jobs import ComposeBackupJob, ComposeMigrateJob, ComposeRestoreJob

q = shlex.quote


def migrate_checks(inputs: CheckInputs) -> None:
    spec: ComposeMigrateJob = inputs.spec
    cl = inputs.checklist
    layout = TargetLayout(spec.target.base_path, spec.source.project)
    # the source's engine here, or on another host over SSH (`[source] host`)
    need, images = remote_source_checks(cl, spec, layout) if spec.source.host is not None else _local_source(cl, spec, layout)
    t = spec.target
    address = SshAddress(t.host, t.port, t.user, t.key_file, t.known_hosts, t.connect_timeout)
    with cl.check("target", "ssh") as c, ssh_connect(address) as host:
        c.ok(f"{address.where}: host key matches {t.known_hosts}; key {t.key_file} accepted")
        _target_checks(cl, host, layout, spec, need, images)


def _local_source(cl: Checklist, spec: ComposeMigrateJob, layout: TargetLayout) -> tuple[int, dict[str, Any] | None]:
    need = 0
    images: dict[str, Any] | None = None
    with cl.check("source", "project") as c:
        client = engine_connect(spec.source.engine)
        try:
            project = inspect_project(client, spec.source.engine, spec.source.project, layout.project_dir)
            if spec.images != "none":
                images = source_images(client, spec.source.project)
        finally:
            client.close()
        need = int(getattr(project, "bytes", 0) or 0)
        c.ok(f"compose project {spec.source.project}: {len(project.model.get('services', {}))} services, {need} bytes of data")
    return need, images


def backup_checks(inputs: CheckInputs) -> None:
    """`compose.backup`: the engine is on this host, the project is found and its volumes'
    mountpoints are readable here (`inspect_project` fails naming one that is not); the repository."""
    spec: ComposeBackupJob = inputs.spec
    cl = inputs.checklist
    with cl.check("source", "project") as c:
        address = engine_address(spec.engine)
        if not engine_on_this_host(address):
            c.fail(f"the engine {redact(address)} is not reached through a socket on this host (compose.backup reads there)")
        else:
            client = engine_connect(spec.engine)
            try:
                project = inspect_project(client, spec.engine, spec.source.project, "", measure=False)
            finally:
                client.close()
            volumes = sum(1 for i in project.items if i.kind == "volume")
            binds = sum(1 for i in project.items if i.kind == "bind")
            files = len(project.definition.files) if project.definition else 0
            c.ok(
                f"compose project {spec.source.project}: {len(project.model.get('services', {}))} services, "
                f"{files} definition files, {volumes} volumes, {binds} bind sources"
            )
    inputs.check_repository(spec.repository)


def restore_checks(inputs: CheckInputs) -> None:
    """`compose.restore`: the snapshot is in the repository and of kind `compose`; the target
    over SSH as a migration's (docker, compose, host tools, helper image, base path, free
    space against the snapshot's size). The project's name, when the job gives one, must be
    free there; otherwise the snapshot's own is checked when the run starts."""
    spec: ComposeRestoreJob = inputs.spec
    cl = inputs.checklist
    stats = inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, "compose")
    need = int((stats or {}).get("bytes", 0) or 0)
    t = spec.target
    layout = TargetLayout(t.base_path, spec.project or "")
    if t.host is None or t.key_file is None or t.known_hosts is None:  # this host's engine
        local = LocalAddress(engine_address(t.engine))
        with local_connect(local) as here:
            host = cast("RemoteHost", here)
            _restore_target_checks(cl, host, layout, spec, need)
        return
    address = SshAddress(t.host, t.port, t.user, t.key_file, t.known_hosts, t.connect_timeout)
    with cl.check("target", "ssh") as c, ssh_connect(address) as host:
        c.ok(f"{address.where}: host key matches {t.known_hosts}; key {t.key_file} accepted")
        _restore_target_checks(cl, host, layout, spec, need)


def _restore_target_checks(cl: Checklist, host: RemoteHost, layout: TargetLayout, spec: ComposeRestoreJob, need: int) -> None:
    if spec.project is not None:
        with cl.check("target", "project") as p:
            label = q(f"label=com.docker.compose.project={spec.project}")
            if host.run(f"docker ps -aq --filter {label}; docker volume ls -q --filter {label}", check=False).stdout.strip():
                p.fail(f"compose project {spec.project} already has containers or volumes on {host.address.host}")
            else:
                p.ok(f"no compose project {spec.project} on {host.address.host}")
    _target_checks(cl, host, layout, spec, need)


def _target_checks(
    cl: Checklist,
    host: RemoteHost,
    layout: TargetLayout,
    spec: ComposeMigrateJob | ComposeRestoreJob,
    need: int,
    images: dict[str, Any] | None = None,
) -> None:
    with cl.check("target", "docker") as c:
        version = host.run("docker version --format '{{.Server.Version}}'", check=False)
        compose = host.run("docker compose version --short", check=False)
        if version.status != 0:
            c.fail(f"docker does not answer on {host.address.where}: {version.stderr.strip()[-200:]}")
        elif compose.status != 0:
            c.fail(f"docker compose is not installed on {host.address.where}")
        else:
            c.ok(f"Docker Engine {version.stdout.strip()}, compose {compose.stdout.strip()}")
    with cl.check("target", "tools") as c:
        missing = missing_host_tools(host)
        if missing:
            c.fail(f"{host.address.where} lacks {', '.join(missing)} on its PATH")
        elif host.run(f"docker image inspect {q(spec.target.helper_image)} >/dev/null 2>&1", check=False).status != 0:
            c.fail(f"helper image {spec.target.helper_image} is not on {host.address.where} (it is never pulled)")
        elif lacking := missing_helper_tools(host, spec.target.helper_image):
            c.fail(f"helper image {spec.target.helper_image} has no {', '.join(lacking)}")
        else:
            c.ok(f"host tools and helper image {spec.target.helper_image} present")
    if isinstance(spec, ComposeMigrateJob):  # (a restore's images are in its snapshot)
        need += _images(cl, host, spec, images)
    _base_path(cl, host, layout, spec.min_free_bytes + need)


def _images(cl: Checklist, host: RemoteHost, spec: ComposeMigrateJob, images: dict[str, Any] | None) -> int:
    """The images a run would send (as its pre-flight plans them: `images.plan`), each named
    with its ID and size; the bytes they need on the target (in the store, then the engine)."""
    if spec.images == "none":
        cl.add("target", "images", Verdict.OK, 'none sent (images = "none": the target must have or build them)')
        return 0
    if images is None:
        return 0  # the source's project was not found: its check failed already
    with cl.check("target", "images") as c:
        to_send = imgs.listing(imgs.plan(host, spec.images, images))
        if not to_send:
            c.ok(f"none to send: {host.address.host} holds every image the project runs ({len(images)})")
            return 0
        total = sum(int(i["bytes"]) for i in to_send)
        listed = "; ".join(
            f"{i['image']} ({i['id'][:19]}, {_mib(i['bytes'])}, {i['layers_on_target']} of {i['layers']} layers there)"
            for i in to_send
        )
        c.ok(f"{len(to_send)} to send, {_mib(total)}: {listed}")
        return 2 * total
    return 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _base_path(cl: Checklist, host: RemoteHost, layout: TargetLayout, need: int) -> None:
    base = layout.base_path
    nearest = f'p={q(base)}; while [ ! -d "$p" ]; do p=$(dirname "$p"); done'
    with cl.check("target", "base path writable") as c:
        if host.run(f'{nearest}; test -w "$p" && test -x "$p"', check=False).status != 0:
            c.fail(f"{host.address.user} may not write {base} (or the directory it would be made in) on {host.address.host}")
        elif (
            layout.project
            and host.run(f'test -e {q(layout.project_dir)} && test -n "$(ls -A {q(layout.project_dir)})"', check=False).status
            == 0
        ):
            c.fail(f"project directory {layout.project_dir} exists on {host.address.host} and is not empty")
        else:
            c.ok(f"{host.address.user} may write {base} on {host.address.host}")
    with cl.check("target", "free space") as c:
        free = host.run(f'{nearest}; df -Pk "$p" | tail -1', check=False)
        try:
            free_bytes = int(free.stdout.split()[3]) * 1024
        except (IndexError, ValueError):
            c.fail(f"cannot tell the free space under {base}: {free.stderr.strip()[-200:]}")
        else:
            text = f"{free_bytes / (1 << 30):.1f} GiB free under {base} on {host.address.host}"
            if free_bytes < need:
                c.fail(f"{text}, {need} bytes needed")
            else:
                c.ok(text)

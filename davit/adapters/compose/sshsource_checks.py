"""`davit check` for a compose.migrate whose source is on another host (`[source] host`): the
source's SSH connection (host key against the job's known_hosts, never accepted; the key
accepted), its project found and resolved there, and its GNU tar (the export runs there).

Read-only, as the target's checks: on the source only `docker ps`/`inspect`, `docker compose
config`, `docker image inspect`, `test`, `cat`, `find`/`stat` and `tar --version` run.
"""

from __future__ import annotations

from typing import Any

from davit.adapters.compose.sshimages import source_images
from davit.adapters.compose.sshsource import SshSource
from davit.adapters.compose.target import TargetLayout
from davit.adapters.ssh.remote import SshAddress
from davit.adapters.ssh.threaded import connect_threaded
from davit.domain.checks import Checklist
from davit.domain.jobs import ComposeMigrateJob


def remote_source_checks(cl: Checklist, spec: ComposeMigrateJob, layout: TargetLayout) -> tuple[int, dict[str, Any] | None]:
    """Record the source's checks; the bytes of data its project holds (0 if not found), and
    the images its containers run (None if not looked for: images = "none", or no project)."""
    s = spec.source
    assert s.host is not None and s.key_file is not None and s.known_hosts is not None  # the spec's validator
    address = SshAddress(s.host, s.port, s.user, s.key_file, s.known_hosts, s.connect_timeout)
    need = 0
    images: dict[str, Any] | None = None
    with cl.check("source", "ssh") as c, connect_threaded(address) as host:
        c.ok(f"{address.where}: host key matches {s.known_hosts}; key {s.key_file} accepted")
        src = SshSource(host, s.engine)
        with cl.check("source", "project") as c:
            project = src.inspect(s.project, layout.project_dir)
            need = project.bytes
            services = len(project.model.get("services", {}))
            c.ok(f"compose project {s.project} on {address.where}: {services} services, {need} bytes of data")
            if spec.images != "none":
                images = source_images(src, s.project)
        with cl.check("source", "tools") as c:
            c.ok(f"GNU tar {src.tar_version()} on {address.where}")
    return need, images

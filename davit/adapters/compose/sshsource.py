"""The source side of a migration when the source engine is on another host, reached over SSH.

`[source] host = ...` (with `user`, `port`, `key_file`, `known_hosts`, as the target has them)
moves a stack between two hosts neither of which runs davitd. Everything the local source does
through the Docker SDK and this host's files is done here through one verified SSH connection
(`ssh/threaded.py`: the host key checked against the job's known_hosts, never accepted):
the project is found by its labels with `docker ps`/`docker inspect`, resolved by the source
host's `docker compose config`; its volumes are read through their mountpoints there (the SSH
user must be able to read them: checked at inspect); its definition files are read with `cat`;
the containers are stopped, started again by a rollback, and removed by `remove_source`, there.
Each item's `tar c` runs on the source host and its stream comes to davitd, which cuts, hashes
and compresses it and sends the chunks to the target as for a local source: source ssh ->
davitd -> target ssh, with the same chunks, checkpoints and resume. `[source] engine` is then
the engine's address on the source host (`DOCKER_HOST` there), its own default when unset.

Images travel as from a local source (`images = "missing" | "all"`): listed there, exported
there by `docker save` and filtered here (`sshimages.py`).

A repeated or retried pass skips reading an unchanged item as for a local source
(`tarindex.py`): its fingerprint is taken on the source host (`sshfingerprint.py`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from davit.adapters.compose import sshimages
from davit.adapters.compose.definition import project_definition
from davit.adapters.compose.localtools import GNU_TAR_MIN, gnu_tar_version
from davit.adapters.compose.migrate import STOP, ComposeMigrateWork
from davit.adapters.compose.pipeline import Spawn
from davit.adapters.compose.source import CONFIG_FILES, WORKING_DIR, Item, Project
from davit.adapters.compose.sshfingerprint import remote_fingerprint
from davit.adapters.compose.target import PreflightFailed
from davit.adapters.docker.engine import COMPOSE_PROJECT
from davit.adapters.docker.imageexport import parse_command as parse_export
from davit.adapters.runwork import RunInputs
from davit.adapters.ssh.remote import SshAddress
from davit.adapters.ssh.threaded import ThreadedHost, connect_threaded
from davit.domain.errors import SourceMissing
from davit.domain.jobs import ComposeMigrateJob
from davit.domain.ports import RunContext

q = shlex.quote


class RemoteFiles:
    """The source host's files, for `definition.project_definition`."""

    def __init__(self, host: ThreadedHost) -> None:
        self.host = host

    def is_file(self, path: str) -> bool:
        return self.host.run(f"test -f {q(path)}", check=False).status == 0

    def read_text(self, path: str) -> str:
        return self.host.read_bytes(f"cat -- {q(path)}").decode()

    def realpath(self, path: str) -> str:
        # GNU and BusyBox readlink alike; a path that cannot be resolved is taken as named
        out = self.host.run(f"readlink -f -- {q(path)}", check=False)
        return out.stdout.rstrip("\n") if out.status == 0 and out.stdout.strip() else path


class SshSource:
    """The source engine and files on another host, through an open `ThreadedHost`."""

    def __init__(self, host: ThreadedHost, engine: str | None) -> None:
        self.host = host
        # the engine's address on that host; unset: the session's own DOCKER_HOST or default socket
        self.docker = f"DOCKER_HOST={q(engine)} docker" if engine else "docker"
        self.where = host.address.where

    def _label(self, project: str) -> str:
        return q(f"label={COMPOSE_PROJECT}={project}")

    def containers(self, project: str, running_only: bool = False) -> list[dict[str, Any]]:
        """The project's containers as `docker inspect` gives them, by name."""
        status = " --filter status=running" if running_only else ""
        ids = self.host.run(f"{self.docker} ps -aq --no-trunc --filter {self._label(project)}{status}").stdout.split()
        if not ids:
            return []
        found = json.loads(self.host.run(f"{self.docker} inspect " + " ".join(q(i) for i in ids)).stdout)
        return sorted(found, key=lambda c: str(c.get("Name", "")))

    def compose(self, args: list[str], cwd: str) -> str:
        return self.host.run(f"cd {q(cwd)} && {self.docker} compose {shlex.join(args)}", timeout=300).stdout

    def inspect(self, name: str, target_dir: str, follow_symlinks: bool = False) -> Project:
        """As `source.inspect_project`, on the source host."""
        containers = self.containers(name)
        what = f"compose project {name} on {self.where}"
        if not containers:
            raise SourceMissing(what, "no container on the engine carries its label")
        labels = (containers[0].get("Config") or {}).get("Labels") or {}
        working_dir = labels.get(WORKING_DIR, "")
        config_files = [f for f in labels.get(CONFIG_FILES, "").split(",") if f]
        if not working_dir or not config_files:
            raise SourceMissing(what, "its containers do not name a working dir and config files")
        files = RemoteFiles(self.host)
        if missing := [f for f in config_files if not files.is_file(f)]:
            raise SourceMissing(what, f"config files are gone: {', '.join(missing)}")
        args = ["-p", name, "--project-directory", working_dir]
        for f in config_files:
            args += ["-f", f]
        model = json.loads(self.compose([*args, "config", "--format", "json"], working_dir))
        written = json.loads(
            self.compose([*args, "config", "--format", "json", "--no-interpolate", "--no-env-resolution"], working_dir)
        )
        listed = [
            {"id": c["Id"], "name": str(c.get("Name", "")).lstrip("/"), "status": (c.get("State") or {}).get("Status", "")}
            for c in containers
        ]
        project = Project(name, working_dir, config_files, model, listed)
        project.written = written
        project.items = self._volumes(project) + self._binds(project, target_dir)
        project.definition = project_definition(name, working_dir, config_files, model, written, files, follow_symlinks)
        project.bytes = sum(self._size(i.source) for i in project.items)
        return project

    def _volumes(self, project: Project) -> list[Item]:
        items = []
        for key, spec in sorted((project.model.get("volumes") or {}).items()):
            if (spec or {}).get("external"):
                continue
            volume = (spec or {}).get("name") or f"{project.name}_{key}"
            found = self.host.run(f"{self.docker} volume inspect {q(volume)}", check=False)
            if found.status != 0:
                if "no such volume" in found.stderr.lower():
                    continue  # declared but never created: nothing to move
                self.host.run(f"{self.docker} volume inspect {q(volume)}")  # raises, with its stderr
            mountpoint = str((json.loads(found.stdout) or [{}])[0].get("Mountpoint") or "")
            readable = f"test -n {q(mountpoint)} && test -d {q(mountpoint)} && test -r {q(mountpoint)} && test -x {q(mountpoint)}"
            if self.host.run(readable, check=False).status != 0:
                raise SourceMissing(
                    f"volume {volume} on {self.where}",
                    f"its mountpoint {mountpoint} is not readable by {self.host.address.user} there",
                )
            items.append(Item(f"volume-{key}", "volume", mountpoint, volume, key=key))
        return items

    def _binds(self, project: Project, target_dir: str) -> list[Item]:
        wd = project.working_dir.rstrip("/")
        sources = sorted(
            {
                mount["source"]
                for service in (project.model.get("services") or {}).values()
                for mount in service.get("volumes") or []
                if mount.get("type") == "bind" and mount.get("source")
            }
        )
        items = []
        for n, source in enumerate(sources):
            kind = self.host.run(f"if [ -f {q(source)} ]; then echo f; elif [ -e {q(source)} ]; then echo d; fi").stdout.strip()
            if not kind:
                continue  # as for a local source: a bind path that does not exist moves nothing
            target = target_dir + source[len(wd) :] if source == wd or source.startswith(wd + "/") else source
            items.append(Item(f"bind-{n}", "bind", source, target, is_file=kind == "f"))
        return items

    def _size(self, path: str) -> int:
        # the regular files' sizes, as the local source sums them (an estimate of the tar bytes)
        out = self.host.run(
            f"find {q(path)} -type f -exec stat -c %s {{}} + 2>/dev/null | awk '{{s += $1}} END {{print s + 0}}'",
            check=False,
        ).stdout.strip()
        return int(out) if out.isdigit() else 0

    def tar_version(self) -> str:
        """The source host's GNU tar version; `PreflightFailed` naming the host if older or absent."""
        first = self.host.run("tar --version 2>&1 | head -n 1", check=False).stdout.strip()
        version = gnu_tar_version(first)
        if version is None or version < GNU_TAR_MIN:
            raise PreflightFailed(
                f"pre-flight on {self.where} (the source) failed: the export needs GNU tar >= "
                f"{GNU_TAR_MIN[0]}.{GNU_TAR_MIN[1]} (for --sort=name), and tar --version says {first[:120]!r}"
            )
        return f"{version[0]}.{version[1]}"

    def stop(self, container_id: str, timeout: int) -> None:
        self.host.run(f"{self.docker} stop -t {int(timeout)} {q(container_id)} >/dev/null", timeout=timeout + 120)

    def start(self, containers: list[dict[str, str]]) -> list[str]:
        """Start each container; what went wrong with those that could not be started."""
        problems = []
        for c in containers:
            done = self.host.run(f"{self.docker} start {q(c['id'])} >/dev/null", check=False)
            if done.status != 0:
                problems.append(f"container {c['name']} on {self.where}: {done.stderr.strip()[-300:]}")
        return problems

    def remove(self, project: str, volumes: list[str]) -> list[str]:
        """Remove the project's containers and networks, and `volumes`; what was removed."""
        removed = []
        for c in self.containers(project):
            self.host.run(f"{self.docker} rm -f {q(c['Id'])} >/dev/null")
            removed.append(str(c.get("Name", "")).lstrip("/"))
        for net in self.host.run(f"{self.docker} network ls -q --filter {self._label(project)}").stdout.split():
            self.host.run(f"{self.docker} network rm {q(net)} >/dev/null")
        for volume in volumes:
            if self.host.run(f"{self.docker} volume inspect {q(volume)} >/dev/null 2>&1", check=False).status != 0:
                continue  # removed by an earlier try of this step: finalize is resumed, not redone
            self.host.run(f"{self.docker} volume rm -f {q(volume)} >/dev/null")
            removed.append(f"volume {volume}")
        return removed


class SshSpawn:
    """Where a remote source's exports run (`pipeline.Spawn`), and its items' fingerprints are taken."""

    def __init__(self, src: SshSource) -> None:
        self.src = src

    def __call__(self, argv: list[str]) -> Any:
        # an image's export: `docker save` there, its layers filtered here (`sshimages.py`)
        if (image := parse_export(argv)) is not None:
            return sshimages.RemoteImageExport(self.src.host, self.src.docker, image[0], image[1])
        return self.src.host.popen(shlex.join(argv))

    def fingerprint(self, item: Item, tar_args: list[str]) -> str | None:
        return remote_fingerprint(self.src.host, item, tar_args)


class SshSourceMigrateWork(ComposeMigrateWork):
    """`compose.migrate` with its source on another host (`ComposeMigrateWork` builds this
    class for a job whose `[source]` has a `host`)."""

    def __init__(self, inputs: RunInputs[ComposeMigrateJob]) -> None:
        super().__init__(inputs)
        s = self.spec.source
        assert s.host is not None and s.key_file is not None and s.known_hosts is not None  # the spec's validator
        self.source_address = SshAddress(s.host, s.port, s.user, s.key_file, s.known_hosts, s.connect_timeout)
        self._open: SshSource | None = None

    @contextmanager
    def _source(self) -> Iterator[SshSource]:
        """The source's connection: the one open for this step, or one for the block."""
        if self._open is not None:
            yield self._open
            return
        with connect_threaded(self.source_address) as host:
            self._open = SshSource(host, self.spec.source.engine)
            try:
                yield self._open
            finally:
                self._open = None

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        details = super().prepare(ctx)
        details["source"] = self.source_address.where
        return details

    def _inspect_source(self) -> Project:
        with self._source() as src:
            return src.inspect(self.spec.source.project, self.layout.project_dir, self.spec.follow_definition_symlinks)

    def _preflight(self, ctx: RunContext) -> dict[str, Any]:
        with self._source():  # one connection for the whole step
            return super()._preflight(ctx)

    def _source_tar(self) -> str:
        with self._source() as src:
            return src.tar_version()

    def _source_images(self, project: str) -> dict[str, dict[str, Any]]:
        with self._source() as src:
            return sshimages.source_images(src, project)

    def _stop(self, ctx: RunContext) -> dict[str, Any]:
        with self._source() as src:
            cursor = ctx.cursor(STOP)
            if cursor is None:
                running = src.containers(self.spec.source.project, running_only=True)
                listed = [{"id": c["Id"], "name": str(c.get("Name", "")).lstrip("/")} for c in running]
                cursor = {"containers": sorted(listed, key=lambda c: c["name"])}
                # Recorded before stopping: a rollback knows what to start again.
                ctx.checkpoint(STOP, cursor, items_done=len(cursor["containers"]))
            for c in cursor["containers"]:
                src.stop(c["id"], self.spec.stop_timeout)
        return {"stopped": [c["name"] for c in cursor["containers"]]}

    def _start_source(self, containers: list[dict[str, str]]) -> list[str]:
        with self._source() as src:
            return src.start(containers)

    def _read_source(self, path: str) -> bytes:
        with self._source() as src:
            return src.host.read_bytes(f"cat -- {q(path)}")

    def _realpath(self, path: str) -> str:
        with self._source() as src:
            return RemoteFiles(src.host).realpath(path)

    def _source_mode(self, path: str) -> int:
        with self._source() as src:
            return int(src.host.run(f"stat -c %a -- {q(path)}").stdout.strip(), 8) & 0o777

    def _write(self, ctx: RunContext) -> dict[str, Any]:
        with self._source():
            return super()._write(ctx)

    def _move_data(self, ctx: RunContext) -> None:
        with self._source():  # open while the items stream from it
            super()._move_data(ctx)

    def _spawner(self) -> Spawn | None:
        src = self._open
        assert src is not None, "the source is spawned from only while `_move_data` holds it open"
        return SshSpawn(src)

    def _remove_source(self, info: dict[str, Any]) -> list[str]:
        volumes = [i.target for i in self._items(info) if i.kind == "volume"] if self.spec.remove_source_volumes else []
        with self._source() as src:
            return src.remove(info["name"], volumes)

"""The local Docker engine as davit uses it: connecting, mapping the SDK's errors, selecting
volumes, and stopping/starting the containers that must be quiet during a backup.

Every Docker SDK call that can fail goes through `engine_errors`, which turns connection
problems into `RetryableError` and API refusals into `PermanentError`, redacted and raised
`from` the cause. The engine address is the job's `engine`, else the daemon's `DOCKER_HOST`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.utils import parse_host

from davit.adapters.oserrors import os_error
from davit.adapters.secrets import redact
from davit.domain.errors import DavitError, PermanentError, RetryableError, SourceMissing
from davit.domain.jobs.docker import STOP_LABEL, VolumeSelection

COMPOSE_PROJECT = "com.docker.compose.project"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"


class EngineError(PermanentError):
    """The engine refused a request."""


class EngineUnreachable(RetryableError):
    """The engine did not answer (socket missing, daemon restarting)."""


def engine_address(configured: str | None) -> str:
    return configured or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


# What the SDK raises for a request it could not make as asked (bad arguments, TLS settings,
# a config file): retrying cannot help. Any other DockerException is about reaching the engine.
SDK_REFUSALS = (
    docker.errors.InvalidVersion,
    docker.errors.InvalidRepository,
    docker.errors.InvalidConfigFile,
    docker.errors.InvalidArgument,
    docker.errors.TLSParameterError,
    docker.errors.NullResource,
    docker.errors.ContainerError,
    docker.errors.BuildError,
    docker.errors.ImageLoadError,
    docker.errors.StreamParseError,
    docker.errors.ContextException,
)
BUSY_STATUS = frozenset({429, 502, 503, 504})


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Translate the SDK's errors at the boundary, naming what was being done."""
    try:
        yield
    except DavitError:
        raise  # already mapped (or a stop request)
    except docker.errors.NotFound as exc:
        raise EngineError(redact(f"{what}: not found: {exc.explanation or exc}")) from exc
    except docker.errors.APIError as exc:
        busy = exc.status_code in BUSY_STATUS
        raise (EngineUnreachable if busy else EngineError)(
            redact(f"{what}: the engine {'is busy' if busy else 'refused'}: {exc.explanation or exc}")
        ) from exc
    except SDK_REFUSALS as exc:
        raise EngineError(redact(f"{what}: {type(exc).__name__}: {exc}")) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, docker.errors.DockerException) as exc:
        # a read timeout is not a ConnectionError: an engine that stopped answering mid-request
        raise EngineUnreachable(redact(f"{what}: cannot reach the Docker engine: {exc}")) from exc
    except requests.exceptions.RequestException as exc:  # an address the SDK cannot use (bad URL, scheme)
        raise EngineError(redact(f"{what}: {type(exc).__name__}: {exc}")) from exc
    except OSError as exc:
        raise os_error(exc, what, EngineUnreachable, EngineError, redact) from exc


def connect(configured: str | None) -> docker.DockerClient:
    address = engine_address(configured)
    try:
        # the SDK's own parse, first: an address it cannot use is the job's to fix, not an
        # engine that is down (it raised a bare ValueError for "[::1", and a DockerException
        # the mapping below took for an unreachable engine, retried, for "tcp://u:pw@h")
        parse_host(address)
    except (ValueError, docker.errors.DockerException) as exc:
        # `from None`: the SDK's text quotes the address, credentials included
        raise EngineError(redact(f"the Docker engine address {address} cannot be used: {exc}")) from None
    with engine_errors(f"connecting to {address}"):
        client = docker.DockerClient(base_url=address, timeout=120)
        client.ping()
    return client


@dataclass(frozen=True)
class VolumeRef:
    name: str
    mountpoint: str
    labels: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mountpoint": self.mountpoint, "labels": self.labels}

    @staticmethod
    def from_json(d: dict[str, Any]) -> VolumeRef:
        return VolumeRef(d["name"], d["mountpoint"], dict(d.get("labels") or {}))


def _ref(volume: Any) -> VolumeRef:
    attrs = volume.attrs
    return VolumeRef(attrs["Name"], attrs.get("Mountpoint") or "", dict(attrs.get("Labels") or {}))


def select_volumes(client: docker.DockerClient, selection: VolumeSelection) -> list[VolumeRef]:
    """The selected volumes, sorted by name; a named volume that is missing is an error."""
    found: list[VolumeRef] = []
    with engine_errors("listing volumes"):
        if selection.names:
            for name in selection.names:
                try:
                    found.append(_ref(client.volumes.get(name)))
                except docker.errors.NotFound as exc:
                    raise SourceMissing(f"volume {name}", "no such volume on the engine") from exc
        elif selection.label is not None:
            found = [_ref(v) for v in client.volumes.list(filters={"label": selection.label})]
        else:
            label = f"{COMPOSE_PROJECT}={selection.compose_project}"
            found = [_ref(v) for v in client.volumes.list(filters={"label": label})]
    chosen = sorted({v.name: v for v in found if v.name not in selection.exclude}.values(), key=lambda v: v.name)
    if not chosen:
        raise SourceMissing("volume selection", f"no volume matches {selection.model_dump(exclude_defaults=True)}")
    return chosen


LOCAL_SCHEMES = ("unix://", "npipe://")


def engine_on_this_host(address: str) -> bool:
    """Whether the engine is addressed through this host's own socket. An engine reached over
    tcp:// or ssh:// may be elsewhere, where a volume's mountpoint names a directory of that
    host; a directory of the same path here (another engine's volume of the same name) must
    never be read in its place."""
    return address.startswith(LOCAL_SCHEMES)


def readable_mountpoint(volume: VolumeRef) -> Path | None:
    """The volume's data directory if this process can read it (the engine runs here)."""
    path = Path(volume.mountpoint)
    if volume.mountpoint and path.is_dir() and os.access(path, os.R_OK | os.X_OK):
        return path
    return None


def containers_to_stop(client: docker.DockerClient, volumes: list[str], group: str | None) -> list[dict[str, str]]:
    """Running containers labelled for stopping (with `group` as the value if given, else
    `true`) that mount one of `volumes`; as [{"id", "name"}] sorted by name."""
    wanted = set(volumes)
    with engine_errors("listing containers"):
        running = client.containers.list(filters={"label": f"{STOP_LABEL}={group or 'true'}", "status": "running"})
    chosen = []
    for container in running:
        mounts = container.attrs.get("Mounts") or []
        if any(m.get("Type") == "volume" and m.get("Name") in wanted for m in mounts):
            chosen.append({"id": container.id, "name": container.name})
    return sorted(chosen, key=lambda c: c["name"])


def stop_containers(client: docker.DockerClient, containers: list[dict[str, str]], timeout: int) -> None:
    for c in containers:
        with engine_errors(f"stopping container {c['name']}"):
            client.containers.get(c["id"]).stop(timeout=timeout)


def start_containers(client: docker.DockerClient, containers: list[dict[str, str]]) -> list[str]:
    """Start each container; the names of those that could not be started (gone, refused)."""
    problems = []
    for c in containers:
        try:
            with engine_errors(f"starting container {c['name']}"):
                client.containers.get(c["id"]).start()
        except (EngineError, EngineUnreachable) as exc:
            problems.append(str(exc))
    return problems

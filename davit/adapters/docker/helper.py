"""Helper containers: reaching a volume's data through the engine when its mountpoint cannot
be read from here (the engine runs on another host, or `access = "helper"`).

A helper is a container created from the job's `helper_image` (a local image, never pulled)
with the volumes mounted under `/davit/NAME`. It is never started to move data: the engine's
archive API streams a mounted volume as a tar from a created container (`get_archive`) and
unpacks a tar into one (`put_archive`). Helpers are named after their run and role, so a
resumed run removes what a crashed one left behind before creating its own, and they are
removed when their step ends, whether it succeeded or not; the daemon removes those of a run
that ended without its work running again (`remove_run_helpers`). The engine serves one archive
of a container at a time (a second request waits for the first stream to end).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from davit.adapters.docker.engine import EngineUnreachable, connect, engine_errors
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from davit.domain.jobs import VolumeBackupJob, VolumeRestoreJob

MOUNT_ROOT = "/davit"
HELPER_LABEL = "davit.helper-of-run"
STREAM_CHUNK = 1 << 20
# Reading and writing go through the engine's archive API, which needs nothing of the image;
# a restore makes what it wrote durable by starting the helper, whose command is `sync`.
RESTORE_TOOLS = ("sync",)
# How the engine says a container's command is not in the image (Docker 20.10 to 27).
NOT_FOUND_MARKS = ("executable file not found", "no such file or directory")


class HelperAccessNotAvailable(PermanentError):
    """The engine's volumes cannot be reached from here: no mountpoint and no helper."""


class HelperImageMissing(PermanentError):
    """The configured helper image is not on the engine (davit never pulls it)."""


class HelperImageUnfit(PermanentError):
    """The helper image lacks a program the helper runs (found before the helper is used)."""

    def __init__(self, image: str, engine: str, missing: list[str]) -> None:
        super().__init__(
            f"helper image {image} on {engine} has no {', '.join(missing)} (the helper container runs "
            f"{'it' if len(missing) == 1 else 'them'}); use an image that has "
            f"{'it' if len(missing) == 1 else 'them'} on its PATH, e.g. one with busybox"
        )
        self.image, self.missing = image, missing


def helper_name(run_id: str, role: str) -> str:
    return f"davit-{role}-{run_id}"


def mounted_path(volume: str) -> str:
    return f"{MOUNT_ROOT}/{volume}"


def require_image(client: docker.DockerClient, image: str | None, engine: str) -> str:
    """The helper image, checked to be on the engine; never pulled."""
    if not image:
        raise HelperAccessNotAvailable(
            f"the volumes on {engine} must be reached through a helper container, and the job sets no "
            "helper_image (a local image with sync, e.g. busybox)"
        )
    with engine_errors(f"looking up helper image {image}"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise HelperImageMissing(
                f"helper image {image} is not on the engine {engine}; davit never pulls it: load or build it there first"
            ) from exc
    return image


def require_tools(client: docker.DockerClient, image: str, engine: str, tools: tuple[str, ...], run_id: str) -> None:
    """Check that `image` runs each of `tools`: a container per tool runs `TOOL --help` (any
    exit status will do, a tool that is there has run); a tool the engine cannot find is named
    in `HelperImageUnfit`, rather than a helper failing with a bare exit status mid-run."""
    missing = []
    for tool in tools:
        name = helper_name(run_id, f"probe-{tool}")
        remove_helper(client, name)
        with engine_errors(f"creating a container from helper image {image} to look for {tool}"):
            probe = client.containers.create(
                image, [tool, "--help"], name=name, labels={HELPER_LABEL: run_id}, network_disabled=True
            )
        try:
            with engine_errors(f"running {tool} in helper image {image}"):
                try:
                    probe.start()
                except docker.errors.APIError as exc:
                    if any(mark in str(exc.explanation or exc).lower() for mark in NOT_FOUND_MARKS):
                        missing.append(tool)
                        continue
                    raise
                probe.wait(timeout=60)
        finally:
            remove_helper(client, name)
    if missing:
        raise HelperImageUnfit(image, engine, missing)


def remove_helper(client: docker.DockerClient, name: str) -> bool:
    """Remove the helper called `name` if it exists; whether there was one."""
    with engine_errors(f"removing helper container {name}"):
        try:
            client.containers.get(name).remove(force=True, v=False)
        except docker.errors.NotFound:
            return False
    return True


def remove_run_helpers(engine: str | None, run_id: str) -> list[str]:
    """Remove every helper labelled with `run_id` on `engine` (what a process killed in the
    middle of a step left); their names."""
    client = connect(engine)
    try:
        with engine_errors(f"listing the helper containers of run {run_id}"):
            found = sorted(c.name for c in client.containers.list(all=True, filters={"label": f"{HELPER_LABEL}={run_id}"}))
        return [name for name in found if remove_helper(client, name)]
    finally:
        client.close()


def remove_leftovers(inputs: RunInputs[VolumeBackupJob | VolumeRestoreJob]) -> list[str]:
    """What an ended volume run left behind: its helper containers (the kinds' line in
    davit/daemon/kinds.py names this). A run that reached the volumes through their mountpoints made none."""
    if inputs.details.get("access") == "mountpoint":
        return []
    return remove_run_helpers(inputs.spec.engine, inputs.run_id)


@contextmanager
def helper_container(client: docker.DockerClient, image: str, name: str, run_id: str, mounts: dict[str, str]) -> Iterator[Any]:
    """A created (not started) helper with each volume of `mounts` ("ro" or "rw") at
    /davit/VOLUME; a leftover of the same name is removed first, and the helper afterwards."""
    remove_helper(client, name)
    volumes = {volume: {"bind": mounted_path(volume), "mode": mode} for volume, mode in mounts.items()}
    with engine_errors(f"creating helper container {name} from {image}"):
        container = client.containers.create(
            image, ["sync"], name=name, volumes=volumes, labels={HELPER_LABEL: run_id}, network_disabled=True
        )
    try:
        yield container
    finally:
        remove_helper(client, name)


class LazyHelper:
    """A helper created on first use and removed on exit: the engine serves one archive of a
    container at a time, so the hard links met inside a volume's stream are read through a
    second helper, which most volumes never need."""

    def __init__(self, client: docker.DockerClient, image: str, name: str, run_id: str, mounts: dict[str, str]) -> None:
        self._args = (client, image, name, run_id, mounts)
        self._stack = ExitStack()
        self._container: Any = None

    def get(self) -> Any:
        if self._container is None:
            self._container = self._stack.enter_context(helper_container(*self._args))
        return self._container

    def __enter__(self) -> LazyHelper:
        remove_helper(self._args[0], self._args[2])
        return self

    def __exit__(self, *exc: object) -> None:
        self._container = None
        self._stack.close()


class ChunkReader:
    """A file-like view of the engine's stream of byte chunks, for tarfile's stream mode.

    `read` hands out the engine's chunks as they come (tarfile's stream buffer joins them),
    so nothing but a chunk or two is held; a broken connection becomes `EngineUnreachable`.
    """

    def __init__(self, chunks: Iterator[bytes], what: str) -> None:
        self._chunks = chunks
        self._what = what

    def read(self, size: int = -1) -> bytes:
        try:
            data = next(self._chunks, b"")
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineUnreachable(f"{self._what}: the engine's stream broke off: {exc}") from exc
        return data

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def open_archive(container: Any, path: str, what: str) -> ChunkReader:
    """The tar stream of `path` in the helper (a mounted volume), as a `ChunkReader`."""
    with engine_errors(what):
        chunks, _stat = container.get_archive(path, chunk_size=STREAM_CHUNK)
    return ChunkReader(chunks, what)

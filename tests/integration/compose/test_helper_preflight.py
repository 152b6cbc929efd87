"""The helper image's tools at pre-flight, against the real peers: a bind path's helper checks
its mount's device and inode with `stat -c %d:%i` before `tar -x` writes (`target.bind_unpacker`);
a helper image whose `stat` is missing or prints something else fails pre-flight naming the
image and what it lacks, before anything is stopped (not every bind unpack after the source
was stopped)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from davit.adapters.compose.migrate import STOP
from davit.adapters.compose.target import PreflightFailed
from tests.integration.compose.stack import Stack
from tests.integration.compose.test_migrate_adapter import SummaryContext, job, work_for
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]

# what `stat` prints where it ignores `-c` (GNU's default format), or is not GNU/BusyBox's
NOT_STAT = '#!/bin/sh\necho "  File: /"\necho "  Size: 4096"\n'


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))


def _rootfs(stat_script: str | None) -> bytes:
    """dash as `sh` (BusyBox's shell would run its own `stat` whatever the image holds), BusyBox
    as `tar`, and `stat` as given (None: none)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "lib", "lib/x86_64-linux-gnu", "lib64"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        _add_file(tar, "bin/sh", Path("/bin/dash").read_bytes())
        _add_file(tar, "bin/busybox", Path("/bin/busybox").read_bytes())
        for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
            _add_file(tar, lib.lstrip("/"), Path(lib).resolve().read_bytes())
        link = tarfile.TarInfo("bin/tar")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        if stat_script is not None:
            _add_file(tar, "bin/stat", stat_script.encode())
    return buf.getvalue()


@pytest.fixture(params=["no stat", "a stat ignoring -c"])
def helper_without_stat(
    request: pytest.FixtureRequest, engines: tuple[docker.DockerClient, docker.DockerClient]
) -> Iterator[str]:
    _source, target = engines
    name = "davit-test/c-gaps21c-nostat" if request.param == "no stat" else "davit-test/c-gaps21c-badstat"
    target.api.import_image_from_data(
        _rootfs(None if request.param == "no stat" else NOT_STAT),
        repository=name,
        tag="1",
        changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'],
    )
    yield f"{name}:1"
    try:
        target.images.remove(f"{name}:1", force=True)
    except docker.errors.ImageNotFound:
        pass


def test_a_helper_image_without_a_usable_stat_fails_preflight_naming_it_before_anything_stops(
    stack: Stack,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    helper_without_stat: str,
    tmp_path: Path,
) -> None:
    source, target = engines
    spec = job(stack, ssh_peer, tmp_path / "target")
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"helper_image": helper_without_stat})})
    ctx = SummaryContext()
    work = work_for(spec, tmp_path)
    work.prepare(ctx)
    with pytest.raises(PreflightFailed) as failed:
        work.run(ctx)
    message = str(failed.value)
    assert f"helper image {helper_without_stat} has no stat -c %d:%i" in message
    assert "has no tar" not in message and "no sh" not in message, "the helper's tar and sh are there"
    assert STOP not in ctx.cursors and not work.needs_rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"} and stack.states(target) == {}

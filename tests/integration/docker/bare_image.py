"""A helper image that lacks what helpers run: static busybox with only `sh` linked (no `sync`,
no `tar`), made with `docker import` like the peers' test image; about 1 MB, imported once
per engine and kept there (later sessions find it and skip the import)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import docker
import docker.errors

BARE_IMAGE = "davit-test/bare-busybox:1"


def _rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = Path("/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return buf.getvalue()


def bare_image(engine: docker.DockerClient) -> str:
    """The bare image on `engine`, imported if it is not there yet."""
    try:
        engine.images.get(BARE_IMAGE)
    except docker.errors.ImageNotFound:
        engine.api.import_image_from_data(
            _rootfs(),
            repository=BARE_IMAGE.split(":")[0],
            tag=BARE_IMAGE.split(":")[1],
            changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'],
        )
    return BARE_IMAGE

"""An image as `docker save` gives it, less the layers the receiving engine holds: a tar stream.

`compose.migrate` sends images through the same chunked, content-addressed transfer as volumes
(`davit/adapters/compose/pipeline.py` reads a subprocess's stdout): this module is that
subprocess (`python -m davit.adapters.docker.imageexport IMAGE [DIFF_ID...]`, the engine's
address in `DAVIT_IMAGE_ENGINE`, never in argv where `ps` shows it). It streams the engine's
image export (`GET /images/{name}/get`, what `docker save` reads) and copies it member by
member, leaving out the `layer.tar` (or OCI `blobs/sha256/...`) of every layer whose diff ID is
named: `docker load` looks each layer up by its chain ID first and opens the layer's file only
when the engine lacks it, so a layer the target already holds needs no bytes (checked against
Docker Engine 20.10 by `tests/integration/compose/test_images.py`). The caller names only diff
IDs whose whole chain the target holds.

The engine's export is deterministic (names sorted, times fixed: two saves are byte for byte
equal), and so is this copy, so a resumed transfer cuts the same chunks and sends only those
the target's store lacks. A layer's diff ID is the sha256 of its uncompressed tar, which is
what `layer.tar` is: in the legacy layout (`<v1 id>/layer.tar`) the name does not tell the
diff ID, so where layers are to be left out each one is hashed into a spool file (memory up to
`SPOOL_MEMORY`, then a temporary file) before it is copied or dropped.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import docker

from davit.adapters.secrets import redact

ENGINE_ENV = "DAVIT_IMAGE_ENGINE"
SPOOL_MEMORY = 8 << 20
COPY = 1 << 20
BLOB_PREFIX = "blobs/sha256/"


class _Chunks(io.RawIOBase):
    """A raw stream over the SDK's chunk iterator, for `tarfile`'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.left:
            try:
                self.left = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self.left))
        buffer[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def _is_layer(name: str) -> bool:
    return name.endswith("/layer.tar") or name.startswith(BLOB_PREFIX)


def filter_export(source: IO[bytes], out: IO[bytes], skip: set[str]) -> list[str]:
    """Copy the export tar `source` to `out`, without the layers whose diff IDs (hex) are in
    `skip`; the names left out."""
    dropped: list[str] = []
    with tarfile.open(fileobj=source, mode="r|") as src, tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if data is None or not skip or not _is_layer(member.name):
                dst.addfile(member, data)
            elif not _copy_layer(dst, member, data, skip):
                dropped.append(member.name)
    return dropped


def _copy_layer(dst: tarfile.TarFile, member: tarfile.TarInfo, data: IO[bytes], skip: set[str]) -> bool:
    """Copy one layer unless its diff ID is in `skip`; whether it was copied."""
    if member.name.startswith(BLOB_PREFIX):  # OCI layout: the blob is named by its digest
        if member.name[len(BLOB_PREFIX) :] in skip:
            return False
        dst.addfile(member, data)
        return True
    with tempfile.SpooledTemporaryFile(SPOOL_MEMORY) as spool:
        digest = hashlib.sha256()
        while block := data.read(COPY):
            digest.update(block)
            spool.write(block)
        if digest.hexdigest() in skip:
            return False
        spool.seek(0)
        dst.addfile(member, spool)
    return True


def command(image: str, skip: list[str]) -> list[str]:
    """The argv of this module's export of `image` (an ID or a name) leaving out `skip`."""
    return [sys.executable, "-m", "davit.adapters.docker.imageexport", image, *sorted(skip)]


def environment(engine: str) -> dict[str, str]:
    return {**os.environ, ENGINE_ENV: engine}


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m davit.adapters.docker.imageexport IMAGE [DIFF_ID...]", file=sys.stderr)
        return 2
    image, skip = argv[0], {d.removeprefix("sha256:") for d in argv[1:]}
    client = docker.DockerClient(base_url=os.environ[ENGINE_ENV], timeout=600)
    try:
        stream = client.api.get_image(image, chunk_size=COPY)
        filter_export(io.BufferedReader(_Chunks(iter(stream)), COPY), sys.stdout.buffer, skip)
        sys.stdout.buffer.flush()
    except (docker.errors.DockerException, OSError, tarfile.TarError) as exc:
        # a connection error may quote the address, credentials and all
        print(redact(f"export of image {image} failed: {exc}"), file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

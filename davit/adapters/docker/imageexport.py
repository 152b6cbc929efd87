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

The export must be the one image asked for, under no name: `docker load` tags every name a
`manifest.json` entry's `RepoTags` or a `repositories` file lists, and loads every entry, so a
crafted export (a source engine not to be trusted, or a proxy before it) could repoint a name
the target's other stacks run, which the rollback knows nothing of. An engine's export by ID
has one entry, whose config is the image ID, no names and no `repositories` (or an empty one):
anything else, or a member whose name leaves the archive, stops the export (`UnexpectedExport`)
before the target reads it. Docker 25+ writes the OCI layout besides (`oci-layout`,
`index.json`, `blobs/sha256/<digest>`, with `manifest.json` still there), and its load reads
names from `index.json` too (the `io.containerd.image.name` and
`org.opencontainers.image.ref.name` annotations): an `index.json` must list one manifest and
name nothing, and an export without `manifest.json` (whose config names the image) is refused.

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
import json
import os
import posixpath
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Any

import docker

from davit.adapters.secrets import redact

ENGINE_ENV = "DAVIT_IMAGE_ENGINE"
SPOOL_MEMORY = 8 << 20
COPY = 1 << 20
BLOB_PREFIX = "blobs/sha256/"
MANIFEST, REPOSITORIES, INDEX = "manifest.json", "repositories", "index.json"  # what `docker load` reads names from
# the annotations of an OCI index (or its entries) that name an image where it is loaded
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
MAX_METADATA = 1 << 20


class UnexpectedExport(tarfile.TarError):
    """The export is not the one image asked for, unnamed (see the module's docstring)."""


class ChunkReader(io.RawIOBase):
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


def filter_export(source: IO[bytes], out: IO[bytes], skip: set[str], image_id: str = "") -> list[str]:
    """Copy the export tar `source` to `out`, without the layers whose diff IDs (hex) are in
    `skip`; the names left out. `UnexpectedExport` if it is not the export of `image_id`
    (`sha256:...`; "" checks only that nothing is named) alone and unnamed."""
    dropped: list[str] = []
    seen: set[str] = set()
    with tarfile.open(fileobj=source, mode="r|") as src, tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if (meta := _metadata_name(member)) is not None:
                if meta in seen:  # `docker load` would read one of the two: which, the check cannot know
                    raise UnexpectedExport(f"the export holds {meta!r} twice")
                seen.add(meta)
                dst.addfile(member, io.BytesIO(_checked_metadata(member, data, image_id)))
            elif data is None or not skip or not _is_layer(member.name):
                dst.addfile(member, data)
            elif not _copy_layer(dst, member, data, skip):
                dropped.append(member.name)
    if MANIFEST not in seen:  # an OCI-only export: nothing above checked which image it is
        raise UnexpectedExport("the export has no manifest.json (which names its image's config)")
    return dropped


def filtered(chunks: Iterator[bytes], skip: set[str], image_id: str) -> Iterator[bytes]:
    """`filter_export` of an export given as chunks (a snapshot's file), as chunks: the copy runs
    in a thread writing into a pipe read here, so a layer is never held whole. Its error is
    raised here once the pipe ends; a reader that stops early closes the pipe, which ends it."""
    read_end, write_end = os.pipe()
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            with open(write_end, "wb", buffering=COPY) as out:
                filter_export(io.BufferedReader(ChunkReader(chunks), COPY), out, skip, image_id)
        except BaseException as exc:  # handed to the reader: this thread has no one else to tell
            failed.append(exc)

    thread = threading.Thread(target=copy, name=f"export-filter-{image_id[7:19]}", daemon=True)
    thread.start()
    try:
        with open(read_end, "rb", buffering=0) as pipe:
            while block := pipe.read(COPY):
                yield block
    finally:
        thread.join()
    if failed:
        raise failed[0]


def _metadata_name(member: tarfile.TarInfo) -> str | None:
    """`manifest.json` or `repositories` if `member` is where `docker load` reads them; None for
    another member. A name that leaves the archive is refused."""
    name = posixpath.normpath(member.name)
    if member.name.startswith("/") or name == ".." or name.startswith("../"):
        raise UnexpectedExport(f"the export holds {member.name!r}, outside the archive")
    return name if name in (MANIFEST, REPOSITORIES, INDEX) else None


def _checked_metadata(member: tarfile.TarInfo, data: IO[bytes] | None, image_id: str) -> bytes:
    """The bytes of `manifest.json` / `repositories`, once they name nothing and list only `image_id`."""
    if data is None or member.size > MAX_METADATA:
        raise UnexpectedExport(f"the export's {member.name!r} is not a small regular file")
    raw = data.read()
    try:
        content = json.loads(raw)
    except ValueError:
        raise UnexpectedExport(f"the export's {member.name!r} is not JSON") from None
    if _metadata_name(member) == REPOSITORIES:
        if content:
            raise UnexpectedExport("the export's 'repositories' names images; the target's load would tag them")
        return raw
    if _metadata_name(member) == INDEX:
        if problem := index_problem(content):
            raise UnexpectedExport(f"the export's index.json {problem}")
        return raw
    if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
        raise UnexpectedExport("the export's manifest.json does not list exactly one image")
    if content[0].get("RepoTags"):
        raise UnexpectedExport("the export's manifest.json names the image; the target's load would tag those names")
    config = posixpath.basename(str(content[0].get("Config", ""))).removesuffix(".json")
    if image_id and config != image_id.removeprefix("sha256:"):
        raise UnexpectedExport(f"the export is of image {config[:19]!r}, not {image_id}")
    return raw


def index_problem(index: Any) -> str | None:
    """What is wrong with an OCI `index.json` of one unnamed image's export; None if nothing."""
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        return "is not an OCI index"
    manifests = index["manifests"]
    if len(manifests) != 1 or not isinstance(manifests[0], dict):
        return "does not list exactly one image"
    for where in (index, manifests[0]):
        annotations = where.get("annotations") or {}
        if not isinstance(annotations, dict):
            return "has annotations that are not a mapping"
        if named := [f"{k}={annotations[k]}" for k in NAME_ANNOTATIONS if annotations.get(k)]:
            return f"names the image ({', '.join(named)[:200]}); the target's load would tag it"
    return None


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


def parse_command(argv: list[str]) -> tuple[str, list[str]] | None:
    """(image, skip) if `argv` is what `command` gives; None for any other command (a source
    reached over SSH runs the export its own way: `compose/sshimages.py`)."""
    head = command("", [])[:3]
    if len(argv) < 4 or argv[:3] != head:
        return None
    return argv[3], argv[4:]


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
        expected = image if image.startswith("sha256:") else ""  # the migration exports by ID
        filter_export(io.BufferedReader(ChunkReader(iter(stream)), COPY), sys.stdout.buffer, skip, expected)
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

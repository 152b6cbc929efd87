"""The images of a compose stack as `compose.backup` stores them (`images = true`): each image
the project's containers run, by ID, as the engine's export of it (`GET /images/{id}/get`, what
`docker save` reads) in one file of the snapshot's tree, `images/<id hex>.tar`.

The engine's export is deterministic (names sorted, times fixed), so a second backup cuts the
same chunks and stores none of them again; `docker load` of the file gives the same image ID.
The stream is read by the store like any other content; an engine error while reading it fails
the run (typed by `engine_errors`), never a partial image stored as if whole.
"""

from __future__ import annotations

from typing import Any

import docker

from davit.adapters.compose.images import source_images
from davit.adapters.docker.engine import engine_errors
from davit.adapters.docker.imageexport import ChunkReader

IMAGES = "images"
READ = 1 << 20


def project_images(client: docker.DockerClient, project: str) -> list[dict[str, Any]]:
    """[{id, refs, bytes, path}] of the images the project's containers run, sorted by ID."""
    found = source_images(client, project)
    return [
        {"id": i["id"], "refs": i["refs"], "bytes": i["bytes"], "path": f"{IMAGES}/{i['id'].removeprefix('sha256:')}.tar"}
        for i in sorted(found.values(), key=lambda i: i["id"])
    ]


class ImageExport(ChunkReader):
    """The engine's export of one image as a readable stream; errors typed at each read."""

    def __init__(self, client: docker.DockerClient, image_id: str) -> None:
        self.image_id = image_id
        self._what = f"exporting image {image_id}"
        with engine_errors(self._what):
            chunks = iter(client.api.get_image(image_id, chunk_size=READ))
        super().__init__(chunks)

    def readinto(self, buffer: Any) -> int:
        with engine_errors(self._what):  # the next chunk comes off the engine's HTTP response
            return super().readinto(buffer)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None) if hasattr(self, "chunks") else None
        if close is not None:
            close()  # the HTTP response under the generator: an export not read to its end stops
        super().close()

"""The images of a compose project whose engine is on another host (`[source] host`), and their
export from there: images travel from an SSH source as they do from a local one (`images.py`).

Listing: the project's containers as `docker inspect` gives them on the source host, each
container's image name resolved there by `docker image inspect` (what `up` would run; a name
gone from the engine leaves the image the container was made from), as `images.source_images`
does through the SDK.

Export: the source host has a Docker CLI, not davit, so `docker save ID` runs there (the same
engine call, `GET /images/get`, as `imageexport.py`'s, byte for byte: deterministic) over the
source's SSH connection, and its stream is filtered here by `imageexport.filter_export`: the
layers whose chain the target holds are left out and the export is checked to be the one image
asked for, unnamed, before any byte of it reaches the target. `RemoteImageExport` offers what
`pipeline._Reader` uses of a `subprocess.Popen`, so the stream is cut into the same
content-addressed chunks as a local export, and a resumed transfer sends only what the
target's store lacks.
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import shlex
import threading
from typing import TYPE_CHECKING, Any

from davit.adapters.compose.images import add_inspected
from davit.adapters.docker.imageexport import COPY, filter_export
from davit.adapters.secrets import redact
from davit.adapters.ssh.threaded import RemoteProcess, ThreadedHost
from davit.domain.errors import SourceMissing

if TYPE_CHECKING:
    from davit.adapters.compose.sshsource import SshSource

q = shlex.quote
AHEAD = 8  # pieces of `COPY` bytes filtered ahead of the pipeline's reader


def source_images(src: SshSource, project: str) -> dict[str, dict[str, Any]]:
    """As `images.source_images`, on the source host: the images the project's containers run,
    by ID, with the names they are run by, their sizes and layers."""
    found: dict[str, dict[str, Any]] = {}
    for c in src.containers(project):
        ref = str((c.get("Config") or {}).get("Image") or "")
        attrs = _inspect(src, ref) if ref else None
        if attrs is None:
            attrs = _inspect(src, str(c.get("Image") or ""))
        if attrs is None:
            name = str(c.get("Name", "")).lstrip("/")
            raise SourceMissing(f"the image of container {name} on {src.where}", "the engine there has no such image")
        add_inspected(found, str(attrs["Id"]), attrs, ref)
    return found


def _inspect(src: SshSource, ref: str) -> dict[str, Any] | None:
    if not ref:
        return None
    done = src.host.run(f"{src.docker} image inspect {q(ref)}", check=False)
    if done.status != 0:
        if "no such" in done.stderr.lower():
            return None
        src.host.run(f"{src.docker} image inspect {q(ref)} >/dev/null")  # raises, with its stderr
    listed = json.loads(done.stdout or "[]")
    return dict(listed[0]) if listed else None


class _Raw(io.RawIOBase):
    """The remote command's stdout as a raw stream: a `BufferedReader` over it reads `COPY`
    bytes per round trip to the connection's thread, not tarfile's 10 KiB records."""

    def __init__(self, proc: RemoteProcess) -> None:
        self.proc = proc

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.proc.stdout.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Killed(Exception):
    """The reader went away: the filter stops."""


class _Pieces(io.RawIOBase):
    """Where the filter writes (through a `BufferedWriter`: pieces of about `COPY` bytes): a bounded queue."""

    def __init__(self, export: RemoteImageExport) -> None:
        self.export = export

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.export._put(bytes(data))
        return len(data)


class _Out:
    """The filtered stream, read as a pipe's buffered `read` is: `size` bytes, fewer only at the end."""

    def __init__(self, export: RemoteImageExport) -> None:
        self.export = export
        self.left = b""
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        parts = [self.left]
        got = len(self.left)
        while (size < 0 or got < size) and not self.ended:
            piece = self.export._get()
            if piece is None:
                self.ended = True
                break
            parts.append(piece)
            got += len(piece)
        data = b"".join(parts)
        if size < 0:
            self.left = b""
            return data
        self.left = data[size:]
        return data[:size]

    def close(self) -> None:
        pass


class _Err:
    def __init__(self, export: RemoteImageExport) -> None:
        self.export = export

    def read(self, size: int = -1) -> bytes:
        said = self.export._remote.stderr.read().decode(errors="replace").strip()
        return "; ".join(t for t in (self.export.error, said) if t).encode()

    def close(self) -> None:
        pass


class RemoteImageExport:
    """`docker save IMAGE_ID` on the source host, less the layers `skip` names, filtered and
    checked here; with the `subprocess.Popen` calls `pipeline._Reader` makes."""

    def __init__(self, host: ThreadedHost, docker: str, image_id: str, skip: list[str]) -> None:
        self.image_id = image_id
        self.where = host.address.where
        self.error = ""
        self._skip = {d.removeprefix("sha256:") for d in skip}
        self._queue: queue.Queue[bytes | None] = queue.Queue(AHEAD)
        self._killed = threading.Event()
        self._remote = host.popen(f"{docker} save {q(image_id)}")
        self.stdout = _Out(self)
        self.stderr = _Err(self)
        self._thread = threading.Thread(target=self._filter, name="davit-image-filter", daemon=True)
        self._thread.start()

    def _filter(self) -> None:
        try:
            pieces = io.BufferedWriter(_Pieces(self), COPY)
            try:
                filter_export(io.BufferedReader(_Raw(self._remote), COPY), pieces, self._skip, self.image_id)
                pieces.flush()
            finally:
                with contextlib.suppress(_Killed, OSError, ValueError):
                    pieces.close()  # now, in this thread: not flushed later by the collector
            while self._remote.stdout.read(COPY):
                pass  # the archive's padding after its end: the command ends once it is read
        except _Killed:
            return
        except Exception as exc:  # any failure of the stream: the export fails, naming it (a message may quote a secret)
            self.error = redact(f"export of image {self.image_id} on {self.where} failed: {type(exc).__name__}: {exc}")
            self._remote.kill()  # it would wait forever for its stream to be read
        self._put(None, final=True)

    def _put(self, piece: bytes | None, final: bool = False) -> None:
        while not self._killed.is_set():
            try:
                self._queue.put(piece, timeout=0.2)
                return
            except queue.Full:
                continue
        if not final:
            raise _Killed

    def _get(self) -> bytes | None:
        while True:
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return None

    def poll(self) -> int | None:
        if self._thread.is_alive():
            return None
        return self._status() if self._remote.poll() is not None else None

    def wait(self) -> int:
        self._thread.join()
        self._remote.wait()
        return self._status()

    def _status(self) -> int:
        status = self._remote.wait()
        if self.error and status == 0:
            return 1
        return status

    def kill(self) -> None:
        self._killed.set()
        self._remote.kill()

"""An engine reached over tcp://, as an engine on another host is: a loopback TCP port
forwarded to a peer engine's unix socket. davit cannot tell where such an engine runs, so
`access = "auto"` must not read the volumes' mountpoints (they would be this host's)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with suppress(OSError):
        while data := src.recv(1 << 16):
            dst.sendall(data)
    with suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, unix_path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # the listener was closed
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(unix_path)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


@contextmanager
def tcp_engine(unix_host: str) -> Iterator[str]:
    """`tcp://127.0.0.1:PORT` forwarding to the engine at `unix_host` (unix:///...sock)."""
    listener = socket.socket(socket.AF_INET)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    threading.Thread(target=_serve, args=(listener, unix_host.removeprefix("unix://")), daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()

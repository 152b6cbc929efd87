"""A TCP pass-through that counts the bytes on the wire: put between an SSH client and its sshd,
it tells what a run sent and received, whatever the client (asyncssh inside davit, OpenSSH's
`ssh` in a baseline pipeline).

Each direction of each connection is moved by `splice(2)` through a pipe: the bytes never enter
Python, so the pass-through costs the machine next to nothing and holds the GIL only between
two system calls (it may run in the same process as davit's in-process runs). A connection is
counted once both its directions ended; `totals` waits for every open connection to end first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass

SPLICE = 1 << 20


@dataclass(frozen=True)
class Wire:
    """Bytes client -> server (`sent`) and server -> client (`received`)."""

    sent: int
    received: int

    def __sub__(self, other: Wire) -> Wire:
        return Wire(self.sent - other.sent, self.received - other.received)


class WireCounter:
    """Listens on 127.0.0.1 (`port`), forwards each connection to `host:port` and counts."""

    def __init__(self, host: str, port: int) -> None:
        self.to = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.lock = threading.Lock()
        self.sent = self.received = self.open = 0
        self.thread = threading.Thread(target=self._accept, name="wirecount", daemon=True)
        self.thread.start()

    def totals(self, settle_s: float = 15.0) -> Wire:
        """The bytes of every connection so far, once none is open (a client that just exited
        may still have its last bytes in flight)."""
        deadline = time.monotonic() + settle_s
        while True:
            with self.lock:
                if self.open == 0 or time.monotonic() > deadline:
                    return Wire(self.sent, self.received)
            time.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.to, timeout=30)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += 1
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
        back.start()
        self._pump(client, upstream, True)
        back.join()
        client.close()
        upstream.close()
        with self.lock:
            self.open -= 1

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        r, w = os.pipe()
        try:
            while True:
                try:
                    n = os.splice(src.fileno(), w, SPLICE)
                except OSError:
                    n = 0
                if n == 0:
                    break
                left = n
                while left:
                    left -= os.splice(r, dst.fileno(), left)
                with self.lock:
                    if up:
                        self.sent += n
                    else:
                        self.received += n
        except OSError:
            pass  # the other side went away: the connection ends
        finally:
            os.close(r)
            os.close(w)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

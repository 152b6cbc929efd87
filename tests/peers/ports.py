"""Free TCP ports on 127.0.0.1 for the peers (chosen at start, so parallel checkouts don't clash)."""

from __future__ import annotations

import socket

from tests.peers.common import PeerError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p such that p and p+1 are both free on 127.0.0.1."""
    for _ in range(100):
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port
    raise PeerError("no two consecutive free ports found on 127.0.0.1")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False

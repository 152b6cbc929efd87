"""The state file that `python -m tests.peers up` writes and the pytest fixtures read.

Shape: {"docker": {"ok": true, "host": ..., "image": ...}, "ssh": {...}, "mongo": {...},
"weaviate": {...}, "seaweedfs": {...}, "mariadb": {...}}; a peer that failed is {"ok": false, "error": ..., "log_tail": ...}.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from tests.peers.common import state_path

PEERS = ("docker", "ssh", "mongo", "weaviate", "seaweedfs", "postgres", "mariadb")
T = TypeVar("T")


@dataclass(frozen=True)
class DockerPeer:
    host: str  # unix:///.../docker.sock, usable as DOCKER_HOST
    image: str  # test image with busybox (sh, tar, sleep, ...)


@dataclass(frozen=True)
class SshPeer:
    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    docker_host: str  # the second engine, the default DOCKER_HOST of remote sessions
    image: str


@dataclass(frozen=True)
class MongoPeer:
    uri: str


@dataclass(frozen=True)
class WeaviatePeer:
    host: str
    http_port: int
    grpc_port: int


@dataclass(frozen=True)
class S3Peer:
    """SeaweedFS's S3 gateway: path-style, plain HTTP on loopback, one bucket made by `up`."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    access_key_id_file: str  # the same keys as files (0600), for configs that name credentials by reference
    secret_access_key_file: str


@dataclass(frozen=True)
class PostgresPeer:
    """PostgreSQL on loopback; the admin (superuser) password is in `password_file` (0600)."""

    host: str
    port: int
    user: str
    password_file: str
    socket_dir: str
    version: str

    @property
    def password(self) -> str:
        return Path(self.password_file).read_text().strip()


@dataclass(frozen=True)
class MariadbPeer:
    """MariaDB on loopback; `user` is an admin (ALL ... WITH GRANT OPTION) whose password is in `password_file` (0600)."""

    host: str
    port: int
    user: str
    password_file: str
    version: str

    @property
    def password(self) -> str:
        return Path(self.password_file).read_text()


def s3_peer_from_entry(entry: dict[str, Any]) -> S3Peer:
    """The state entry names the key files; the keys themselves are read from them."""
    return S3Peer(
        endpoint=entry["endpoint"],
        bucket=entry["bucket"],
        region=entry["region"],
        access_key_id=Path(entry["access_key_id_file"]).read_text(),
        secret_access_key=Path(entry["secret_access_key_file"]).read_text(),
        access_key_id_file=entry["access_key_id_file"],
        secret_access_key_file=entry["secret_access_key_file"],
    )


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((path or state_path()).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(state: dict[str, dict[str, Any]], path: Path | None = None) -> None:
    """Write atomically, so a reader never sees half a file."""
    path = path or state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def from_entry(cls: type[T], entry: dict[str, Any]) -> T:
    """Build a peer dataclass from its state-file entry (extra keys are ignored)."""
    kwargs = {}
    for f in fields(cls):  # type: ignore[arg-type]
        kwargs[f.name] = int(entry[f.name]) if f.type in (int, "int") else entry[f.name]
    return cls(**kwargs)

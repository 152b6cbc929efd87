"""pytest plugin: markers and session fixtures for the real peers.

Register with `pytest_plugins = ["tests.peers.fixtures"]`. A test gets a peer by asking for
its fixture (`docker_peer`, `ssh_peer`, `mongo_peer`, `weaviate_peer`, `seaweedfs_peer`, `postgres_peer`,
`mariadb_peer`) or by its marker
(`@pytest.mark.docker`, ...). When the peer is not up: outside CI the test is skipped with one
line saying how to get it; with CI=true the test fails with the peer's error and log tail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import docker_engine, ferretdb, mariadb, postgres, seaweedfs, ssh_host, weaviate
from tests.peers.common import state_path
from tests.peers.state import (
    DockerPeer,
    MariadbPeer,
    MongoPeer,
    PostgresPeer,
    S3Peer,
    SshPeer,
    WeaviatePeer,
    from_entry,
    load,
    s3_peer_from_entry,
)

MARKERS = {
    "docker": "needs the Docker Engine peer (dockerd + compose + test image)",
    "ssh": "needs the second host peer (sshd + second dockerd)",
    "mongo": "needs the MongoDB-wire peer (FerretDB)",
    "weaviate": "needs the Weaviate peer",
    "seaweedfs": "needs the S3-compatible storage peer (SeaweedFS)",
    "postgres": "needs the PostgreSQL peer",
    "mariadb": "needs the MariaDB peer (mariadbd, admin user with a password file)",
}
CHECKS = {
    "docker": docker_engine.check,
    "ssh": ssh_host.check,
    "mongo": ferretdb.check,
    "weaviate": weaviate.check,
    "seaweedfs": seaweedfs.check,
    "postgres": postgres.check,
    "mariadb": mariadb.check,
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a peer fixture carries that peer's marker (for `-m "not docker"`)."""
    for item in items:
        for name in MARKERS:
            if f"{name}_peer" in getattr(item, "fixturenames", ()):
                item.add_marker(name)


def _peer_entry(name: str) -> dict[str, Any]:
    entry = load().get(name)
    if entry and entry.get("ok") and CHECKS[name](entry):
        return entry
    log_tail = ""
    if not entry:
        problem = f"peer '{name}' is not up (nothing in {state_path()})"
    elif not entry.get("ok"):
        problem = f"peer '{name}' failed to start: {entry.get('error')}"
        log_tail = str(entry.get("log_tail") or "")
    else:
        problem = f"peer '{name}' is in {state_path()} but does not answer"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}\n{log_tail}".rstrip(), pytrace=False)
    pytest.skip(f"{problem}; get it with `make peers` (or `python -m tests.peers up --only {name}`)")


# Session-scoped and cached by pytest: the state file is read once per peer per run.
@pytest.fixture(scope="session")
def docker_peer() -> DockerPeer:
    return from_entry(DockerPeer, _peer_entry("docker"))


@pytest.fixture(scope="session")
def ssh_peer() -> SshPeer:
    return from_entry(SshPeer, _peer_entry("ssh"))


@pytest.fixture
def engines(docker_peer: DockerPeer, ssh_peer: SshPeer) -> Iterator[tuple[Any, Any]]:
    """(the source engine, the target's engine behind sshd) as Docker SDK clients: the docker
    peer's engine and the one the ssh peer's sessions reach."""
    import docker  # (only tests of the engines pay for its import)

    source, target = docker.DockerClient(base_url=docker_peer.host), docker.DockerClient(base_url=ssh_peer.docker_host)
    try:
        yield source, target
    finally:
        source.close()
        target.close()


@pytest.fixture(scope="session")
def mongo_peer() -> MongoPeer:
    return from_entry(MongoPeer, _peer_entry("mongo"))


@pytest.fixture(scope="session")
def weaviate_peer() -> WeaviatePeer:
    return from_entry(WeaviatePeer, _peer_entry("weaviate"))


@pytest.fixture(scope="session")
def seaweedfs_peer() -> S3Peer:
    """Endpoint, bucket, region and keys of the S3 peer; tests write under a prefix of their own."""
    return s3_peer_from_entry(_peer_entry("seaweedfs"))


@pytest.fixture(autouse=True)
def _peers_for_markers(request: pytest.FixtureRequest) -> None:
    """A test marked `@pytest.mark.docker` (etc.) without the fixture still needs the peer."""
    for name in MARKERS:
        if request.node.get_closest_marker(name) is not None:
            request.getfixturevalue(f"{name}_peer")


@pytest.fixture(scope="session")
def postgres_peer() -> PostgresPeer:
    """Host, port and admin user of the PostgreSQL peer; the password is read from its 0600 file."""
    return from_entry(PostgresPeer, _peer_entry("postgres"))


@pytest.fixture(scope="session")
def mariadb_peer() -> MariadbPeer:
    """Host, port, admin user and password file of the MariaDB peer; tests make databases of their own."""
    return from_entry(MariadbPeer, _peer_entry("mariadb"))


@pytest.fixture
def fresh_postgres_server(postgres_peer: PostgresPeer) -> Iterator[PostgresPeer]:
    """A second PostgreSQL cluster, empty (none of the peer's roles), started for this test and
    removed after it; same admin user name as the peer, its own password file."""
    base = Path(tempfile.mkdtemp(prefix="davit-fresh-pg-"))  # short: its socket lives in it
    base.rmdir()
    try:
        yield from_entry(PostgresPeer, postgres.start_instance(base))
    finally:
        postgres.stop_instance(base)


@pytest.fixture
def fresh_mariadb_server(mariadb_peer: MariadbPeer) -> Iterator[MariadbPeer]:
    """A second MariaDB server, empty (none of the peer's accounts), started for this test and
    removed after it; same admin user name as the peer, its own password file."""
    base = Path(tempfile.mkdtemp(prefix="davit-fresh-maria-"))
    base.rmdir()
    server = None
    try:
        entry, server = mariadb.start_instance(base)
        yield from_entry(MariadbPeer, entry)
    finally:
        if server is not None:
            mariadb.stop_instance(base, server)
        else:
            shutil.rmtree(base, ignore_errors=True)

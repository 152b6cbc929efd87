"""Peer `weaviate`: Weaviate v1.39.0 built with `go install`, run standalone on loopback.

Raft elects a leader only when the data port is the gossip port + 1 and the raft RPC port is
the raft port + 1, so those are chosen in pairs. Healthy means /v1/.well-known/ready answers
and a schema change (create and delete a throwaway collection) succeeds.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.peers.common import (
    PeerError,
    cache_dir,
    fresh_dir,
    go_binary,
    run,
    run_dir,
    running_pid,
    say,
    spawn,
    stop,
    wait_until,
)
from tests.peers.ports import free_port, free_port_pair

NAME = "weaviate"
VERSION = "v1.39.0"
PROBE_CLASS = "DavitPeersProbe"


def binary() -> str:
    target = cache_dir() / f"weaviate-{VERSION}" / "weaviate-server"
    if not target.exists():
        say(f"building weaviate {VERSION} (first time, ~4 min)...")
        run(
            [go_binary(), "install", f"github.com/weaviate/weaviate/cmd/weaviate-server@{VERSION}"],
            env={"GOBIN": str(target.parent), "GOFLAGS": "-buildvcs=false"},
            timeout=1800,
        )
    return str(target)


def _ports() -> dict[str, int]:
    """http, grpc, gossip/gossip+1 and raft/raft+1, all free and all distinct."""
    for _ in range(50):
        gossip, raft = free_port_pair(), free_port_pair()
        ports = {"http": free_port(), "grpc": free_port(), "gossip": gossip, "raft": raft}
        used = [ports["http"], ports["grpc"], gossip, gossip + 1, raft, raft + 1]
        if len(set(used)) == len(used):
            return ports
    raise PeerError("could not choose distinct free ports for weaviate")


def _request(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def ready(port: int) -> bool:
    return _request(port, "GET", "/v1/.well-known/ready") == 200


def schema_works(port: int) -> bool:
    """Create and delete a throwaway collection: proves raft has a leader."""
    _request(port, "DELETE", f"/v1/schema/{PROBE_CLASS}")
    created = _request(port, "POST", "/v1/schema", {"class": PROBE_CLASS, "vectorizer": "none"})
    return created == 200 and _request(port, "DELETE", f"/v1/schema/{PROBE_CLASS}") == 200


def up() -> dict[str, Any]:
    exe = binary()
    stop(NAME)
    data = fresh_dir(run_dir() / "weaviate")
    ports = _ports()
    env = {
        "PERSISTENCE_DATA_PATH": str(data),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
        "DEFAULT_VECTORIZER_MODULE": "none",
        "CLUSTER_HOSTNAME": "node1",
        "CLUSTER_IN_LOCALHOST": "true",
        "CLUSTER_BIND_ADDR": "127.0.0.1",  # gossip, data and raft ports on loopback only
        "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
        "RAFT_BOOTSTRAP_EXPECT": "1",
        "GRPC_PORT": str(ports["grpc"]),
        "CLUSTER_GOSSIP_BIND_PORT": str(ports["gossip"]),
        "CLUSTER_DATA_BIND_PORT": str(ports["gossip"] + 1),
        "RAFT_PORT": str(ports["raft"]),
        "RAFT_INTERNAL_RPC_PORT": str(ports["raft"] + 1),
        "DISABLE_TELEMETRY": "true",
        "GO_PROFILING_DISABLE": "true",  # else a debug listener on *:6060
        "LOG_LEVEL": "info",
    }
    spawn(NAME, [exe, "--host", "127.0.0.1", "--port", str(ports["http"]), "--scheme", "http"], env=env)
    wait_until(lambda: ready(ports["http"]), what="weaviate /v1/.well-known/ready", name=NAME, timeout=120)
    wait_until(lambda: schema_works(ports["http"]), what="weaviate schema changes (raft leader)", name=NAME, timeout=60)
    return {"ok": True, "host": "127.0.0.1", "http_port": ports["http"], "grpc_port": ports["grpc"], "version": VERSION}


def check(entry: dict[str, Any]) -> bool:
    try:
        return running_pid(NAME) is not None and ready(int(entry["http_port"]))
    except (OSError, KeyError, ValueError):
        return False


def down() -> None:
    stop(NAME, timeout=60)
    data = run_dir() / "weaviate"
    if data.exists():
        fresh_dir(data).rmdir()

"""Peer `seaweedfs`: SeaweedFS's `weed server` with its S3 gateway, on loopback, one bucket.

`go install github.com/seaweedfs/seaweedfs/weed@...` refuses (SeaweedFS's go.mod has `replace`
directives), so tests/peers/seaweedfs/ is a small module of ours that requires SeaweedFS at a
pinned version, carries the same `replace` line, and `go build`s its `weed` command; the binary
is cached by a hash of that module's files (~6 min to build on 2 busy cores, 230 MB).

Every listener gets a port chosen here, gRPC ones included (left alone, each server takes its
HTTP port + 10000), and the Iceberg and Lance catalogs `weed server -s3` starts on fixed ports
are turned off. Credentials are generated per start into s3.json (one identity, all actions)
and two 0600 files the state names. Healthy means an authenticated (SigV4) HEAD of the bucket
answers 200; `up` creates the bucket with an authenticated PUT, so both prove the keys work.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    fresh_dir,
    go_build_cached,
    run_dir,
    running_pid,
    spawn,
    stop,
    wait_until,
)
from tests.peers.ports import free_port, port_free

NAME = "seaweedfs"
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"  # `weed version`: 30GB 4.53
MODULE_DIR = Path(__file__).resolve().parent / "seaweedfs"
BUCKET = "davit-test"
REGION = "us-east-1"
SERVERS = ("master", "volume", "filer", "s3")
GRPC_OFFSET = 10000  # SeaweedFS's default gRPC port is the HTTP port + 10000


def binary() -> Path:
    """Build (once per module content) and return the `weed` binary."""
    return go_build_cached(
        MODULE_DIR,
        ("go.mod", "go.sum", "tools.go"),
        "seaweedfs",
        "weed",
        "github.com/seaweedfs/seaweedfs/weed",
        "SeaweedFS's weed (first time, ~6 min)",
        timeout=3600,
    )


def _ports() -> dict[str, int]:
    """An HTTP and a gRPC port per server, all free and distinct; each gRPC port is HTTP + 10000
    as well (so a server that ignores its gRPC flag still finds its default free)."""
    for _ in range(100):
        ports: dict[str, int] = {}
        for server in SERVERS:
            port = free_port()
            if port + GRPC_OFFSET > 65535 or not port_free(port + GRPC_OFFSET):
                break
            ports[server], ports[f"{server}_grpc"] = port, port + GRPC_OFFSET
        if len(ports) == 2 * len(SERVERS) and len(set(ports.values())) == len(ports):
            return ports
    raise PeerError("could not choose distinct free ports (and their +10000 gRPC ports) for seaweedfs")


def _s3_config(access_key: str, secret_key: str) -> dict[str, Any]:
    return {
        "identities": [
            {
                "name": "davit-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def _signed_request(port: int, method: str, path: str, access_key: str, secret_key: str) -> int:
    """One AWS Signature V4 request with an empty body (path-style); the HTTP status."""
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = f"127.0.0.1:{port}"
    payload_hash = hashlib.sha256(b"").hexdigest()
    signed_headers = "host;x-amz-content-sha256;x-amz-date"
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}  # sorted by name
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in headers.items())
    canonical = "\n".join([method, path, "", canonical_headers, signed_headers, payload_hash])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
    del headers["host"]  # urllib sends it
    req = urllib.request.Request(f"http://{host}{path}", data=b"" if method == "PUT" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _keys(entry: dict[str, Any]) -> tuple[str, str]:
    return Path(entry["access_key_id_file"]).read_text(), Path(entry["secret_access_key_file"]).read_text()


def bucket_answers(entry: dict[str, Any]) -> bool:
    """An authenticated HEAD of the bucket answers 200."""
    access_key, secret_key = _keys(entry)
    return _signed_request(int(entry["s3_port"]), "HEAD", f"/{entry['bucket']}", access_key, secret_key) == 200


def _server_argv(exe: Path, top: Path, data: Path, config: Path, ports: dict[str, int]) -> list[str | Path]:
    argv: list[str | Path] = [
        exe,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=256",  # small volumes: a test machine's disk, not a data centre's
        "-volume.max=0",  # as many volumes as the free disk allows
        "-filer",
        f"-filer.localSocket={top / 'filer.sock'}",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # both default to fixed ports (8181, 9101) on all checkouts
        "-s3.port.lance=0",
    ]
    for server in SERVERS:
        argv += [f"-{server}.port={ports[server]}", f"-{server}.port.grpc={ports[server + '_grpc']}"]
    return argv


def _answers(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:  # not listening yet
        return False


@dataclass
class PrivateS3:
    """A SeaweedFS of one test's own (to stop, pause or configure without touching the shared
    peer): its endpoint, the process, and the keys of each identity by name."""

    endpoint: str
    port: int
    process: subprocess.Popen[bytes]
    keys: dict[str, tuple[str, str]]


@contextmanager
def private_instance(top: Path, identities: dict[str, list[str]], policies: dict[str, Any] | None = None) -> Iterator[PrivateS3]:
    """`weed server` under `top` with one identity per entry of `identities` (name -> legacy
    actions; a name in `policies` instead gets that IAM policy attached, which SeaweedFS then
    applies in place of the actions), bucket BUCKET made by the first identity (give it Admin).
    Stopped (SIGKILL after SIGTERM) on exit."""
    exe = binary()
    data = top / "data"
    data.mkdir(parents=True)
    keys = {name: ("DAVIT" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)) for name in identities}
    doc: dict[str, Any] = {"identities": [], "policies": []}
    for name, actions in identities.items():
        ident: dict[str, Any] = {"name": name, "credentials": [{"accessKey": keys[name][0], "secretKey": keys[name][1]}]}
        ident["actions"] = actions
        if policies and name in policies:
            ident["policyNames"] = [f"{name}-policy"]
            doc["policies"].append({"name": f"{name}-policy", "content": json.dumps(policies[name])})
        doc["identities"].append(ident)
    config = top / "s3.json"
    config.write_text(json.dumps(doc))
    config.chmod(0o600)
    ports = _ports()
    with open(top / "weed.log", "ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in _server_argv(exe, top, data, config, ports)],
            cwd=top,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        admin = keys[next(iter(identities))]
        deadline = time.monotonic() + 120
        while not _answers(lambda: _signed_request(ports["s3"], "PUT", f"/{BUCKET}", *admin) in (200, 409)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PeerError("private SeaweedFS did not come up", (top / "weed.log").read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield PrivateS3(f"http://127.0.0.1:{ports['s3']}", ports["s3"], proc, keys)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # a test may leave it paused
            proc.terminate()
            try:
                # its data is thrown away with `top`: no need to wait out weed's graceful stop,
                # which took 10-20 s per instance (the teardown of each module that starts one)
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def up() -> dict[str, Any]:
    exe = binary()
    stop(NAME)
    top = fresh_dir(run_dir() / "seaweedfs")
    data = top / "data"
    data.mkdir()
    ports = _ports()
    access_key, secret_key = "DAVIT" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    config = top / "s3.json"
    key_files = {"access_key_id_file": top / "access_key_id", "secret_access_key_file": top / "secret_access_key"}
    for path, text in (
        (config, json.dumps(_s3_config(access_key, secret_key))),
        (key_files["access_key_id_file"], access_key),
        (key_files["secret_access_key_file"], secret_key),
    ):
        path.write_text(text)
        path.chmod(0o600)
    argv = _server_argv(exe, top, data, config, ports)
    spawn(NAME, argv, cwd=top)
    entry: dict[str, Any] = {
        "ok": True,
        "endpoint": f"http://127.0.0.1:{ports['s3']}",
        "s3_port": ports["s3"],
        "filer_port": ports["filer"],
        "master_port": ports["master"],
        "bucket": BUCKET,
        "region": REGION,
        **{k: str(v) for k, v in key_files.items()},
        "version": VERSION,
    }

    def create_bucket() -> bool:  # 409: it exists already (a retry after a slow answer)
        return _signed_request(ports["s3"], "PUT", f"/{BUCKET}", access_key, secret_key) in (200, 409)

    wait_until(create_bucket, what=f"SeaweedFS S3 on 127.0.0.1:{ports['s3']} creating bucket {BUCKET}", name=NAME, timeout=120)
    wait_until(lambda: bucket_answers(entry), what=f"SeaweedFS S3 bucket {BUCKET}", name=NAME, timeout=30)
    return entry


def check(entry: dict[str, Any]) -> bool:
    try:
        return running_pid(NAME) is not None and bucket_answers(entry)
    except (OSError, KeyError, ValueError):
        return False


def down() -> None:
    stop(NAME, timeout=30)
    top = run_dir() / "seaweedfs"
    if top.exists():
        fresh_dir(top).rmdir()

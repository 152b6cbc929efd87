"""Peer `mongo`: FerretDB v1.24.2 (MongoDB wire protocol) with its SQLite handler.

Upstream's cmd/ferretdb panics when built with `go install`, so we build the tiny main module
in tests/peers/ferretdb/ (go.mod/go.sum pin FerretDB v1.24.2) that embeds the `ferretdb`
package. The binary is cached by a hash of that module's files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    cache_dir,
    fresh_dir,
    run,
    run_dir,
    running_pid,
    say,
    spawn,
    stop,
    wait_until,
)
from tests.peers.ports import free_port

NAME = "ferretdb"
FERRETDB_VERSION = "v1.24.2"
MODULE_DIR = Path(__file__).resolve().parent / "ferretdb"


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                   else None)
    if found is None:
        raise PeerError("the Go toolchain (`go`) is not on PATH; it comes with the machine")
    return found


def binary() -> Path:
    """Build (once per module content) and return the davit-ferretdb binary."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((MODULE_DIR / name).read_bytes())
    target = cache_dir() / f"ferretdb-{FERRETDB_VERSION}-{digest.hexdigest()[:12]}" / "davit-ferretdb"
    if not target.exists():
        say(f"building FerretDB {FERRETDB_VERSION} (first time, ~2 min)...")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        run([go_binary(), "build", "-trimpath", "-o", tmp, "."], cwd=MODULE_DIR,
            env={"GOFLAGS": "-mod=readonly -buildvcs=false"})
        os.replace(tmp, target)
    return target


def hello(port: int) -> bool:
    """One OP_MSG `hello` round trip on the MongoDB wire protocol; true if it answers ok: 1."""
    body = (b"\x10hello\x00" + struct.pack("<i", 1)
            + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00")
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    msg = struct.pack("<i", 0) + b"\x00" + doc  # flagBits, section kind 0, document
    header = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)  # length, requestID, responseTo, OP_MSG
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(header + msg)
        length = struct.unpack("<i", s.recv(4, socket.MSG_WAITALL))[0]
        reply = s.recv(length - 4, socket.MSG_WAITALL)
    return b"\x01ok\x00" + struct.pack("<d", 1.0) in reply


def up() -> dict[str, Any]:
    exe = binary()
    stop(NAME)
    data = fresh_dir(run_dir() / "ferretdb")
    port = free_port()
    spawn(NAME, [exe, "-listen-addr", f"127.0.0.1:{port}", "-sqlite-url", f"file:{data}/"])
    wait_until(lambda: hello(port), what=f"FerretDB on 127.0.0.1:{port}", name=NAME, timeout=30)
    return {"ok": True, "uri": f"mongodb://127.0.0.1:{port}/", "port": port,
            "version": FERRETDB_VERSION}


def check(entry: dict[str, Any]) -> bool:
    try:
        return running_pid(NAME) is not None and hello(int(entry["port"]))
    except (OSError, KeyError, ValueError, struct.error):
        return False


def down() -> None:
    stop(NAME)
    data = run_dir() / "ferretdb"
    if data.exists():
        fresh_dir(data).rmdir()

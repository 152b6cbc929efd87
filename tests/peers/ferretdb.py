"""Peer `mongo`: FerretDB v1.24.2 (MongoDB wire protocol) with its SQLite handler.

Upstream's cmd/ferretdb panics when built with `go install`, so we build the tiny main module
in tests/peers/ferretdb/ (go.mod/go.sum pin FerretDB v1.24.2) that embeds the `ferretdb`
package. The binary is cached by a hash of that module's files.

A second instance runs with authentication on and one user (`auth_*` keys of the entry; the
password is in `auth_password_file`), for tests of a wrong password. FerretDB's "new auth"
(SCRAM, users in the backend) is an internal option the embeddable `ferretdb.Config` does not
expose: `auth_binary()` copies the FerretDB module from Go's module cache, adds the fields to
`ferretdb.Config` (`patch_config`), and builds `ferretdb/auth/main.go` against the copy
through a `replace` directive; cached like the first binary. `up()` keeps a plain instance
that already answers, so adding the second instance never restarts the first.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    cache_dir,
    fresh_dir,
    go_binary,
    go_build_cached,
    run,
    run_dir,
    running_pid,
    say,
    spawn,
    stop,
    wait_until,
)
from tests.peers.ports import free_port
from tests.peers.state import load

NAME = "ferretdb"
AUTH_NAME = "ferretdb-auth"
AUTH_USER = "davit"
FERRETDB_VERSION = "v1.24.2"
MODULE_DIR = Path(__file__).resolve().parent / "ferretdb"


def binary() -> Path:
    """Build (once per module content) and return the davit-ferretdb binary."""
    return go_build_cached(
        MODULE_DIR,
        ("go.mod", "go.sum", "main.go"),
        f"ferretdb-{FERRETDB_VERSION}",
        "davit-ferretdb",
        ".",
        f"FerretDB {FERRETDB_VERSION} (first time, ~2 min)",
    )


def patch_config(source: str) -> str:
    """ferretdb/ferretdb.go with Config fields for FerretDB's new auth and its setup user."""
    edits = [
        (
            '"github.com/FerretDB/FerretDB/internal/util/state"',
            '"github.com/FerretDB/FerretDB/internal/util/password"\n\t"github.com/FerretDB/FerretDB/internal/util/state"',
        ),
        (
            "\tSQLiteURL string // For example: `file:data/`.\n",
            "\tSQLiteURL string // For example: `file:data/`.\n\n\tEnableNewAuth bool\n\tSetupDatabase string\n"
            "\tSetupUsername string\n\tSetupPassword string\n",
        ),
        (
            "\t\tSQLiteURL: config.SQLiteURL,\n",
            "\t\tSQLiteURL: config.SQLiteURL,\n\n\t\tSetupDatabase: config.SetupDatabase,\n"
            "\t\tSetupUsername: config.SetupUsername,\n\t\tSetupPassword: password.WrapPassword(config.SetupPassword),\n",
        ),
        (
            "\t\t\tBatchSize:               100,\n",
            "\t\t\tBatchSize:               100,\n\t\t\tEnableNewAuth:           config.EnableNewAuth,\n",
        ),
    ]
    for old, new in edits:
        if source.count(old) != 1:
            raise PeerError(f"patching FerretDB's ferretdb.go: {old!r} not found once (another FerretDB version?)")
        source = source.replace(old, new)
    return source


def auth_binary() -> Path:
    """Build (once per module content) the FerretDB binary with authentication on."""
    binary()  # the plain build also fetches the FerretDB module into Go's module cache
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "auth/main.go"):
        digest.update((MODULE_DIR / name).read_bytes())
    digest.update(Path(__file__).read_bytes())
    top = cache_dir() / f"ferretdb-auth-{FERRETDB_VERSION}-{digest.hexdigest()[:12]}"
    target = top / "davit-ferretdb-auth"
    if target.exists():
        return target
    say(f"building FerretDB {FERRETDB_VERSION} with authentication (first time, ~1 min)...")
    env = {"GOFLAGS": "-mod=mod -buildvcs=false"}
    src = run(
        [go_binary(), "list", "-m", "-f", "{{.Dir}}", "github.com/FerretDB/FerretDB"],
        cwd=MODULE_DIR,
        env={"GOFLAGS": "-mod=readonly"},
    ).strip()
    build = fresh_dir(top / "build")
    shutil.copytree(src, build / "ferretdb-src")
    for path in (build / "ferretdb-src").rglob("*"):
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    config_go = build / "ferretdb-src" / "ferretdb" / "ferretdb.go"
    config_go.write_text(patch_config(config_go.read_text()))
    mod = (
        (MODULE_DIR / "go.mod")
        .read_text()
        .replace("module github.com/davit/tests/peers/ferretdb", "module github.com/davit/tests/peers/ferretdbauth")
    )
    (build / "go.mod").write_text(mod + "\nreplace github.com/FerretDB/FerretDB => ./ferretdb-src\n")
    shutil.copy(MODULE_DIR / "go.sum", build / "go.sum")
    shutil.copy(MODULE_DIR / "auth" / "main.go", build / "main.go")
    tmp = target.with_suffix(".tmp")
    run([go_binary(), "build", "-trimpath", "-tags", "davitauth", "-o", tmp, "."], cwd=build, env=env)
    os.replace(tmp, target)
    shutil.rmtree(build, ignore_errors=True)
    return target


def hello(port: int) -> bool:
    """One OP_MSG `hello` round trip on the MongoDB wire protocol; true if it answers ok: 1."""
    body = b"\x10hello\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    msg = struct.pack("<i", 0) + b"\x00" + doc  # flagBits, section kind 0, document
    header = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)  # length, requestID, responseTo, OP_MSG
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(header + msg)
        length = struct.unpack("<i", s.recv(4, socket.MSG_WAITALL))[0]
        reply = s.recv(length - 4, socket.MSG_WAITALL)
    return b"\x01ok\x00" + struct.pack("<d", 1.0) in reply


def _answers(name: str, port: Any) -> bool:
    try:
        return running_pid(name) is not None and hello(int(port))
    except (OSError, TypeError, ValueError, struct.error):
        return False


def up() -> dict[str, Any]:
    entry = load().get("mongo") or {}
    if not _answers(NAME, entry.get("port")):
        exe = binary()
        stop(NAME)
        data = fresh_dir(run_dir() / "ferretdb")
        port = free_port()
        spawn(NAME, [exe, "-listen-addr", f"127.0.0.1:{port}", "-sqlite-url", f"file:{data}/"])
        wait_until(lambda: hello(port), what=f"FerretDB on 127.0.0.1:{port}", name=NAME, timeout=30)
        entry = {"uri": f"mongodb://127.0.0.1:{port}/", "port": port}
    else:
        say("mongo: the plain FerretDB instance answers, keeping it")
    exe = auth_binary()
    stop(AUTH_NAME)
    data = fresh_dir(run_dir() / "ferretdb-auth")
    password_file = run_dir() / "ferretdb-auth.password"
    password_file.write_text(secrets.token_urlsafe(18))
    password_file.chmod(0o600)
    auth_port = free_port()
    spawn(
        AUTH_NAME,
        [
            exe,
            "-listen-addr",
            f"127.0.0.1:{auth_port}",
            "-sqlite-url",
            f"file:{data}/",
            "-setup-database",
            "admin",
            "-setup-username",
            AUTH_USER,
            "-setup-password-file",
            password_file,
        ],
    )
    wait_until(lambda: hello(auth_port), what=f"FerretDB with auth on 127.0.0.1:{auth_port}", name=AUTH_NAME, timeout=30)
    return {
        "ok": True,
        "uri": entry["uri"],
        "port": entry["port"],
        "version": FERRETDB_VERSION,
        "auth_port": auth_port,
        "auth_user": AUTH_USER,
        "auth_password_file": str(password_file),
    }


def check(entry: dict[str, Any]) -> bool:
    return _answers(NAME, entry.get("port")) and _answers(AUTH_NAME, entry.get("auth_port"))


def down() -> None:
    stop(NAME)
    stop(AUTH_NAME)
    for name in ("ferretdb", "ferretdb-auth"):
        data = run_dir() / name
        if data.exists():
            fresh_dir(data).rmdir()
    (run_dir() / "ferretdb-auth.password").unlink(missing_ok=True)

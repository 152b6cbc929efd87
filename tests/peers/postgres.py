"""Peer `postgres`: Debian's PostgreSQL 15, its own cluster on loopback with a password admin.

`initdb` refuses to run as root, so the data directory belongs to the `postgres` system user
and the server runs as that user (`runuser`); scram-sha-256 everywhere, superuser `admin`
whose password lives in a 0600 file named by the state (never in argv). Unix sockets go to the
short per-checkout dir under /tmp; TCP on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    apt_install,
    fresh_dir,
    log_dir,
    pid_file,
    run,
    run_dir,
    running_pid,
    sock_dir,
    stop,
    wait_until,
)
from tests.peers.ports import free_port

NAME = "postgres"
MAJOR = "15"
BIN = Path(f"/usr/lib/postgresql/{MAJOR}/bin")
USER = "admin"


def _base() -> Path:
    return run_dir() / "postgres"


def _socket_dir() -> Path:
    return sock_dir() / "postgres"


def _as_postgres(argv: list[str | Path]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *(str(a) for a in argv)]


def _chown(path: Path, owner: pwd.struct_passwd) -> None:
    os.chown(path, owner.pw_uid, owner.pw_gid)


def _initdb(data: Path, password: str, owner: pwd.struct_passwd, workdir: Path | None = None) -> None:
    """A fresh cluster; the password file initdb reads is the postgres user's and goes at once."""
    pwfile = (workdir or _base()) / "initdb.pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    _chown(pwfile, owner)
    try:
        options = ["-A", "scram-sha-256", "-U", USER, f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"]
        run(_as_postgres([BIN / "initdb", "-D", data, *options]))
    finally:
        pwfile.unlink(missing_ok=True)


def _connects(port: int, password_file: str) -> bool:
    # Local import: the peers tool runs before the venv's test extras may be importable elsewhere.
    import psycopg

    password = Path(password_file).read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=password, dbname="postgres", connect_timeout=3) as conn:
        return conn.execute("select 1").fetchone() == (1,)


def up() -> dict[str, Any]:
    apt_install(["postgresql", "postgresql-contrib"])
    down()
    owner = pwd.getpwnam("postgres")
    base = fresh_dir(_base())
    data = base / "data"
    data.mkdir(mode=0o700)
    sockets = fresh_dir(_socket_dir())
    for path in (base, data, sockets):
        _chown(path, owner)
    password = secrets.token_urlsafe(18)
    password_file = base / "admin.password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    _initdb(data, password, owner)
    port = free_port()
    log_dir().mkdir(parents=True, exist_ok=True)
    log = log_dir() / f"{NAME}.log"
    log.touch()
    _chown(log, owner)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    run(_as_postgres([BIN / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start"]))
    pid = int((data / "postmaster.pid").read_text().split()[0])
    pid_file(NAME).parent.mkdir(parents=True, exist_ok=True)
    pid_file(NAME).write_text(json.dumps({"pid": pid, "exe": "postgres"}))
    wait_until(lambda: _connects(port, str(password_file)), what="postgres accepting the admin password", name=NAME, timeout=60)
    version = run([BIN / "postgres", "--version"]).split()[2]  # "postgres (PostgreSQL) 15.18 (Debian ...)"
    return {
        "ok": True,
        "host": "127.0.0.1",
        "port": port,
        "user": USER,
        "password_file": str(password_file),
        "socket_dir": str(sockets),
        "version": version,
    }


def check(entry: dict[str, Any]) -> bool:
    try:
        return running_pid(NAME) is not None and _connects(int(entry["port"]), str(entry["password_file"]))
    except Exception:
        return False


def down() -> None:
    data = _base() / "data"
    if running_pid(NAME) is not None and data.exists():
        # A fast shutdown (SIGINT) ends sessions at once; stop()'s SIGTERM would wait for them.
        argv = _as_postgres([BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30", "stop"])
        subprocess.run(argv, capture_output=True, check=False)
    stop(NAME)
    for path in (_base(), _socket_dir()):
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
    if running_pid(NAME) is not None:
        raise PeerError("postgres did not stop")


def start_instance(base: Path) -> dict[str, Any]:
    """A second, empty cluster of its own under `base` (a new directory): for a test that needs
    a server holding none of the peer's roles (a restore into a fresh server). Same binaries and
    settings as the peer; its own data dir, sockets, log, port and admin password (0600 file).
    Returns the entry a `PostgresPeer` is made from; `stop_instance(base)` ends it."""
    owner = pwd.getpwnam("postgres")
    base.mkdir(mode=0o755)
    data, sockets = base / "data", base / "s"
    data.mkdir(mode=0o700)
    sockets.mkdir(mode=0o700)
    for path in (data, sockets):
        _chown(path, owner)
    password = secrets.token_urlsafe(18)
    password_file = base / "admin.password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    work = base / "initdb"
    work.mkdir(mode=0o700)
    _chown(work, owner)
    _initdb(data, password, owner, work)
    port = free_port()
    log = base / "postgres.log"
    log.touch()
    _chown(log, owner)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"  # a throwaway server
    run(_as_postgres([BIN / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start"]))
    deadline = 60.0
    wait_until(lambda: _connects(port, str(password_file)), what=f"the cluster in {base}", name=NAME, timeout=deadline)
    version = run([BIN / "postgres", "--version"]).split()[2]
    return {
        "ok": True,
        "host": "127.0.0.1",
        "port": port,
        "user": USER,
        "password_file": str(password_file),
        "socket_dir": str(sockets),
        "version": version,
    }


def stop_instance(base: Path) -> None:
    """End a cluster `start_instance(base)` started (immediately: it is thrown away) and remove `base`."""
    data = base / "data"
    if (data / "postmaster.pid").exists():
        argv = _as_postgres([BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"])
        subprocess.run(argv, capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


def halt_instance(base: Path, mode: str = "immediate") -> None:
    """Stop a cluster `start_instance(base)` started but keep its data: an outage of the server
    (`immediate` is a crash: sessions cut, recovery at the next start). `resume_instance` starts it again."""
    argv = _as_postgres([BIN / "pg_ctl", "-D", base / "data", "-m", mode, "-w", "-t", "30", "stop"])
    run(argv)


def resume_instance(base: Path, entry: dict[str, Any]) -> None:
    """Start again, on its port, a cluster `halt_instance(base)` stopped; returns once it takes logins."""
    options = f"-p {entry['port']} -k {base / 's'} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = base / "postgres.log"
    run(_as_postgres([BIN / "pg_ctl", "-D", base / "data", "-o", options, "-l", log, "-w", "-t", "60", "start"]))
    wait_until(
        lambda: _connects(int(entry["port"]), str(entry["password_file"])), what=f"the cluster in {base}", name=NAME, timeout=60
    )

"""Peer `mariadb`: Debian's MariaDB server (10.11) on loopback with its own data directory.

`mariadb-install-db` makes a fresh data directory under the peers' run dir, `mariadbd
--no-defaults` serves it on 127.0.0.1 and a free port (socket under /tmp/davit-peers-<hash>/),
and an admin user `davit` gets a fresh random password kept in a 0600 file that the state
names (`password_file`): tests connect over TCP with it, like a user's job would. Root has no
password but is reachable only through the socket, in a 0700 directory.

Debian's own packaged service is never used: everything runs with `--no-defaults` and its own
paths, and when installing the package started the packaged server (a machine without a
`policy-rc.d` that forbids it), that server is stopped so nothing holds port 3306 behind our back.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    apt_install,
    deb_installed,
    fresh_dir,
    run,
    run_dir,
    running_pid,
    sock_dir,
    spawn,
    stop,
    wait_until,
)
from tests.peers.ports import free_port, port_open

NAME = "mariadb"
USER = "davit"
DEB_PACKAGES = ["mariadb-server", "mariadb-client"]


def data_dir() -> Path:
    return run_dir() / "mariadb"


def socket_path() -> Path:
    # A directory of its own, 0700: the root socket admits root without a password, and the
    # shared sock_dir() must stay traversable by other peers' users (PostgreSQL runs as postgres).
    return sock_dir() / "mariadb" / "mariadb.sock"


def password_file() -> Path:
    return run_dir() / "mariadb-admin.password"


def _install() -> None:
    fresh_install = not all(deb_installed(pkg) for pkg in DEB_PACKAGES)
    apt_install(DEB_PACKAGES)
    if fresh_install and Path("/run/mysqld/mysqld.pid").exists():
        # The package's maintainer scripts started the packaged server (no policy-rc.d said
        # no): stop it, our peer is a server of its own and must not share the machine with it.
        subprocess.run(["service", "mariadb", "stop"], capture_output=True, check=False)


def root_sql(sql: str) -> str:
    """Run SQL as root over the peer's socket (SQL on stdin, so no secret lands in argv)."""
    return run(
        ["mariadb", "--no-defaults", f"--socket={socket_path()}", "--user=root", "--batch", "--skip-column-names"],
        input=sql.encode(),
        timeout=60,
    )


def up() -> dict[str, Any]:
    _install()
    stop(NAME)
    data = fresh_dir(data_dir())
    socket_path().parent.mkdir(parents=True, exist_ok=True)
    os.chmod(socket_path().parent, 0o700)
    socket_path().unlink(missing_ok=True)
    run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ],
        timeout=300,
    )
    port = free_port()
    spawn(
        NAME,
        [
            "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={socket_path()}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            f"--pid-file={run_dir() / 'pids' / 'mariadbd.pid'}",
            f"--log-error={run_dir() / 'logs' / 'mariadbd-error.log'}",
            "--skip-name-resolve",
            # What Debian's packaged configuration sets (50-server.cnf); bare mariadbd says latin1.
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ],
    )
    wait_until(lambda: _answers(port), what="mariadbd on its socket and port", name=NAME, timeout=120)
    password = secrets.token_urlsafe(18)
    pw_file = password_file()
    pw_file.unlink(missing_ok=True)
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    root_sql(
        f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{password}';\n"
        f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%' WITH GRANT OPTION;\nFLUSH PRIVILEGES;\n"
    )
    version = root_sql("SELECT VERSION();").strip()
    return {
        "ok": True,
        "host": "127.0.0.1",
        "port": port,
        "user": USER,
        "password_file": str(pw_file),
        "socket": str(socket_path()),
        "version": version,
    }


def _answers(port: int) -> bool:
    if not (socket_path().exists() and port_open(port)):
        return False
    root_sql("SELECT 1;")
    return True


def check(entry: dict[str, Any]) -> bool:
    try:
        return running_pid(NAME) is not None and _answers(int(entry["port"]))
    except (PeerError, OSError, KeyError, ValueError):
        return False


def down() -> None:
    stop(NAME, timeout=60)
    password_file().unlink(missing_ok=True)
    socket_path().unlink(missing_ok=True)
    if data_dir().exists():
        fresh_dir(data_dir()).rmdir()


def start_instance(base: Path, options: Sequence[str] = ()) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """A second, empty server of its own under `base` (a new directory): for a test that needs a
    server holding none of the peer's accounts (a restore into a fresh server), or set unlike
    the peer (`options`, more mariadbd options: a small max_allowed_packet). Same binary and
    settings as the peer; its own data dir, socket, port, log and admin password (0600 file).
    Returns the entry a `MariadbPeer` is made from and the server process for `stop_instance`."""
    base.mkdir(mode=0o700)
    data, socket = base / "data", base / "mariadb.sock"
    install = ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal"]
    run([*install, "--skip-test-db", "--user=root"], timeout=300)
    port = free_port()
    with open(base / "mariadbd.log", "ab") as log:
        server = subprocess.Popen(
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={socket}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={base / 'mariadbd.pid'}",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-flush-log-at-trx-commit=0",  # a throwaway server
                *options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    as_root = ["mariadb", "--no-defaults", f"--socket={socket}", "--user=root", "--batch", "--skip-column-names"]

    def answers() -> bool:
        if server.poll() is not None:
            raise PeerError(f"the MariaDB server in {base} exited", (base / "mariadbd.log").read_text()[-4000:])
        return socket.exists() and port_open(port)

    wait_until(answers, what=f"the MariaDB server in {base}", name=NAME, timeout=120)
    password = secrets.token_urlsafe(18)
    pw_file = base / "admin.password"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    sql = f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{password}';\n"
    sql += f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%' WITH GRANT OPTION;\n"
    run(as_root, input=sql.encode(), timeout=60)  # on stdin: the password is never in argv
    version = run([*as_root, "-e", "SELECT VERSION()"], timeout=60).strip()
    entry = {"ok": True, "host": "127.0.0.1", "port": port, "user": USER, "password_file": str(pw_file), "version": version}
    return entry, server


def stop_instance(base: Path, server: subprocess.Popen[bytes]) -> None:
    """End a server `start_instance(base)` started and remove `base`."""
    if server.poll() is None:
        server.kill()  # thrown away: nothing in it needs a clean shutdown
        server.wait(timeout=30)
    shutil.rmtree(base, ignore_errors=True)

"""The password pg_dump/pg_restore read through PGPASSFILE is gone when davitd is killed -9
while the tool runs: an operator restarting after a crash finds no file holding the database
password (a 0600 file in /tmp survives the kill, is read by anyone who becomes root or the
daemon's user later, and ends up in the backups of /tmp). And the tool still logs in with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from davit.adapters.postgres.client import Server, tool
from davit.domain.jobs.postgres import PostgresServer
from tests.peers.state import PostgresPeer

SECRET = "s3cret-\u00e9-never-on-disk"

CHILD = textwrap.dedent(
    """
    import sys, time
    from davit.adapters.postgres.client import Server
    from davit.domain.jobs.postgres import PostgresServer
    spec = PostgresServer(host="127.0.0.1", port=1, user="admin", password_file=sys.argv[1])
    with Server(spec, "postgres.backup nightly").passfile_env() as env:
        print(env["PGPASSFILE"], flush=True)
        time.sleep(60)
    """
)


def files_holding(root: Path, secret: bytes) -> list[Path]:
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if secret in path.read_bytes():
                found.append(path)
    return found


def test_no_password_file_is_left_when_the_daemon_is_killed_while_pg_dump_runs(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password_file = secrets / "pg.password"
    password_file.write_text(SECRET)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(password_file)], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None
    passfile = child.stdout.readline().decode().strip()
    assert passfile, "the child did not start"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert files_holding(scratch, SECRET.encode()) == []
    assert not os.path.exists(passfile) or SECRET.encode() not in Path(passfile).read_bytes()


def test_pg_dump_logs_in_with_the_password_it_is_given(postgres_peer: PostgresPeer, tmp_path: Path) -> None:
    peer = postgres_peer
    spec = PostgresServer(host=peer.host, port=peer.port, user=peer.user, password_file=peer.password_file)
    server = Server(spec, "postgres.backup nightly")
    with server.passfile_env() as env:
        done = subprocess.run(
            [tool("pg_dump"), "--schema-only", *server.tool_args("postgres")],
            env=env,  # (no pass_fds: subprocess closes the other descriptors, as every caller does)
            capture_output=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert b"PostgreSQL database dump" in done.stdout

"""Connecting to a PostgreSQL server named by a job, and translating failures at the boundary.

The password (from `password_file`, `password_env`, or inside `dsn_file`) is given to psycopg
in-process, and to pg_dump/pg_restore through a `PGPASSFILE` that is an anonymous memory file
(memfd, 0600) open in davitd, which the tool opens by its path `/proc/PID/fd/N`: never in argv, never in
the environment (only the passfile's path is), never in a message, and never on disk: it is
gone with the last process holding it, even when davitd is killed -9 while the tool runs (a
file in a temporary directory would survive that). Without memfd (not Linux), a 0600 file in
a private 0700 temporary directory, removed when the tool has ended. A refused login is a
permanent failure naming the user and the server; a server that cannot be reached is
retryable (the executor backs off); anything else the server refuses is permanent and names
what was being done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import conninfo

from davit.adapters.secrets import redact, resolve
from davit.domain.errors import DavitError, PermanentError, RetryableError
from davit.domain.jobs.postgres import PostgresServer

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
AUTH_STATES = {"28P01", "28000"}  # invalid_password, invalid_authorization_specification
AUTH_TEXT = ("password authentication failed", "no password supplied", "authentication failed")
UNREACHABLE_TEXT = ("Connection refused", "could not connect", "server closed the connection", "No such file or directory")


class PostgresAuthFailed(PermanentError):
    pass


class PostgresUnreachable(RetryableError):
    pass


class PostgresRefused(PermanentError):
    pass


def tool(name: str) -> str:
    """The path of a PostgreSQL client program (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    for directory in BIN_DIRS:
        if os.access(f"{directory}/{name}", os.X_OK):
            return f"{directory}/{name}"
    found = shutil.which(name)
    if found is None:
        raise PermanentError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return found


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


class Server:
    """One server named by a job: its connection parameters (password kept apart) and error mapping."""

    def __init__(self, spec: PostgresServer, what: str) -> None:
        self.what = what
        if spec.dsn_file is not None:
            text = resolve(None, spec.dsn_file, "dsn")
            try:
                params = conninfo.conninfo_to_dict(text)
            except psycopg.ProgrammingError:
                raise PermanentError(f"{what}: {spec.dsn_file} does not hold a libpq connection string") from None
            self.password = str(params.pop("password", "") or "")
            self.params: dict[str, Any] = {k: v for k, v in params.items() if k in ("host", "port", "user", "dbname", "sslmode")}
            self.maintenance_db = str(self.params.pop("dbname", spec.maintenance_db))
        else:
            self.password = (
                resolve(spec.password_env, spec.password_file, "password") if (spec.password_env or spec.password_file) else ""
            )
            self.params = {"host": spec.host, "port": spec.port, "user": spec.user}
            self.maintenance_db = spec.maintenance_db
        self.user = str(self.params.get("user") or "")
        self.where = f"{self.params.get('host', 'localhost')}:{self.params.get('port', 5432)}"

    def connect(self, dbname: str | None = None, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        with self.errors(f"connecting to database {dbname or self.maintenance_db}"):
            return psycopg.connect(
                **self.params,
                dbname=dbname or self.maintenance_db,
                password=self.password or None,
                autocommit=autocommit,
                connect_timeout=10,
                application_name="davit",
            )

    def redact(self, text: str) -> str:
        return redact(text, self.password) if self.password else redact(text)

    def _auth_failed(self, doing: str) -> PostgresAuthFailed:
        return PostgresAuthFailed(
            f"{self.what}: authentication failed for user {self.user!r} on {self.where} while {doing} "
            "(check the password the job names)"
        )

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Map psycopg's errors raised while `doing` to davit's, without the password."""
        try:
            yield
        except DavitError:
            raise
        except psycopg.OperationalError as exc:
            text = self.redact(str(exc))
            if exc.sqlstate in AUTH_STATES or any(t in text for t in AUTH_TEXT):
                raise self._auth_failed(doing) from None
            if exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")):
                raise PostgresUnreachable(f"{self.what}: server {self.where} unreachable while {doing}: {text}") from None
            raise PostgresRefused(f"{self.what}: {doing} failed on {self.where}: {text}") from None
        except psycopg.Error as exc:
            raise PostgresRefused(f"{self.what}: {doing} failed on {self.where}: {self.redact(str(exc))}") from None

    # --- the server's own tools ----------------------------------------------------------------

    def tool_args(self, dbname: str) -> list[str]:
        """Connection options for pg_dump/pg_restore: everything but the password."""
        params = {**self.params, "dbname": dbname}
        return ["--dbname", conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}), "--no-password"]

    @contextmanager
    def passfile_env(self) -> Iterator[dict[str, str]]:
        """The environment for a PostgreSQL tool: PGPASSFILE naming a memory file open in this
        process, closed on exit; the password never enters the environment itself."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if not self.password:
            yield env
            return
        line = f"*:*:*:{_escape(self.user or '*')}:{_escape(self.password)}\n".encode()
        try:
            fd = os.memfd_create("davit-pgpass", os.MFD_CLOEXEC)
        except (AttributeError, OSError):
            with self._passfile_on_disk(line, env) as on_disk:
                yield on_disk
            return
        try:
            os.fchmod(fd, 0o600)  # libpq ignores a passfile others may read
            os.write(fd, line)
            # this process's descriptor by its /proc path: a tool started without `pass_fds`
            # (close_fds) still opens it, as a process of the same user
            yield {**env, "PGPASSFILE": f"/proc/{os.getpid()}/fd/{fd}"}
        finally:
            os.close(fd)

    @contextmanager
    def _passfile_on_disk(self, line: bytes, env: dict[str, str]) -> Iterator[dict[str, str]]:
        """Without memfd: a 0600 file in a private 0700 directory, removed on exit."""
        private = tempfile.mkdtemp(prefix="davit-pg-")
        try:
            path = Path(private) / "pgpass"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(line)
            yield {**env, "PGPASSFILE": str(path)}
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def tool_failed(self, argv: Sequence[str], returncode: int, stderr: str, doing: str) -> DavitError:
        """The error of a pg_dump/pg_restore that exited non-zero, classified like psycopg's."""
        text = self.redact(stderr.strip())[-2000:]
        if any(t in text for t in AUTH_TEXT):
            return self._auth_failed(doing)
        if any(t in text for t in UNREACHABLE_TEXT):
            return PostgresUnreachable(f"{self.what}: server {self.where} unreachable while {doing}: {text}")
        return PostgresRefused(f"{self.what}: {Path(argv[0]).name} exited {returncode} while {doing}: {text}")


def finish_tool(server: Server, proc: subprocess.Popen[bytes], errfile: IO[bytes], argv: Sequence[str], doing: str) -> None:
    """Wait for a tool whose stdout was consumed; raise its classified error if it failed.
    Its stderr went to `errfile` (a file, not a pipe: a pipe left unread could block it)."""
    if proc.wait() != 0:
        errfile.seek(0)
        raise server.tool_failed(argv, proc.returncode, errfile.read(64 << 10).decode(errors="replace"), doing)

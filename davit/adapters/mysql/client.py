"""Connecting to a MariaDB/MySQL server named by a job, and translating the drivers' errors.

The password comes from the job's `password_file`/`password_env` (or the `[client]` group of
its `defaults_file`, which PyMySQL reads itself) and stays in this process: no subprocess gets
it, and every message that leaves this package goes through `redact` with it as a secret.
A refused login is permanent and names the user and the server; a server that does not
answer (refused connection, lost connection, timeouts, deadlocks, a server shutting down) is
retryable and left to the executor's bounded backoff; anything else the server refuses is
permanent and names what was being done.

Every connection speaks utf8mb4, in UTC (`time_zone = '+00:00'`, so TIMESTAMP values travel
unchanged) and with PyMySQL's decoders off (`ENCODERS_ONLY`): a value arrives as the server's own
text (numbers, dates, strings) or bytes (binary strings, BIT, spatial values), never through
a Python type that could round it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
from pymysql.connections import Connection

from davit.adapters.mysql import cdriver
from davit.adapters.oserrors import os_error
from davit.adapters.secrets import redact, resolve
from davit.domain.errors import DavitError, PermanentError, RetryableError
from davit.domain.jobs.mysql import MysqlServer

ACCESS_DENIED = {1044, 1045, 1698}  # ER_DBACCESS_DENIED, ER_ACCESS_DENIED, ER_ACCESS_DENIED_NO_PASSWORD
# Connection trouble and conditions that pass: can't connect, server gone or lost, shutting
# down, lock wait timeout, deadlock, too many connections, query interrupted by a restart.
TRANSIENT = {1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055}
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 3600  # one statement: a big table's ORDER BY may sort before the first row


# PyMySQL's encoders (Python values into SQL, for its own `SET AUTOCOMMIT`) without its
# decoders (keyed by field type): results stay the server's text.
ENCODERS_ONLY = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


class MysqlAuthFailed(PermanentError):
    pass


class MysqlUnreachable(RetryableError):
    pass


class MysqlRefused(PermanentError):
    pass


def quote_name(name: str) -> str:
    """An identifier as SQL: backquoted, backquotes doubled."""
    return "`" + name.replace("`", "``") + "`"


def quote_text(text: str) -> str:
    """A string literal (the session never has NO_BACKSLASH_ESCAPES: see `SESSION_SETUP`)."""
    return "'" + pymysql.converters.escape_string(text) + "'"


# What every connection sets first: strict mode (a value the target's column cannot hold fails
# the load naming the table, instead of being changed silently; a value the source server
# stored is always one its column takes back) without NO_ZERO_DATE (zero dates load), an
# explicit 0 in an AUTO_INCREMENT column kept as 0 (as in mariadb-dump's scripts), UTC, and no
# foreign key checks (tables are loaded in any order, each in its own transaction).
SQL_MODE = "STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO"
SESSION_SETUP = (
    f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00', foreign_key_checks = 0, "
    "unique_checks = 0, character_set_results = 'utf8mb4'"
)


class Server:
    """One server a job names; opens connections with the secret resolved once."""

    def __init__(self, spec: MysqlServer, what: str) -> None:
        self.spec = spec
        self.what = what
        self.password = None if spec.defaults_file else resolve(spec.password_env, spec.password_file, "password")
        self.user = spec.user or "(user of the defaults_file)"
        self.where = f"{spec.host}:{spec.port}" if not spec.defaults_file else f"the server of {spec.defaults_file}"

    def connect(self, *, autocommit: bool = True, rows: bool = False) -> Connection[Any]:
        """A connection; `rows`: one that streams a backup's rows, through the C driver when
        installed (`cdriver.py`: same results, a quarter of the CPU)."""
        kwargs: dict[str, Any] = {"host": self.spec.host, "port": self.spec.port}
        if self.spec.defaults_file:
            kwargs = {"read_default_file": self.spec.defaults_file, "read_default_group": "client"}
            if self.spec.user:
                kwargs["user"] = self.spec.user
        else:
            kwargs.update(user=self.spec.user, password=self.password)
        kwargs.update(
            charset="utf8mb4",
            conv=ENCODERS_ONLY,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            write_timeout=READ_TIMEOUT,
            program_name="davit",
        )
        with self.errors("connecting"):
            conn = cdriver.connect(kwargs) if rows and cdriver.in_use() else pymysql.connect(**kwargs)
            with conn.cursor() as cur:
                cur.execute(SESSION_SETUP)
        if self.spec.defaults_file and not cdriver.is_c(conn):
            self.user = conn.user.decode() if isinstance(conn.user, bytes) else str(conn.user)
            self.where = f"{conn.host}:{conn.port}"
        return conn

    def ping(self) -> dict[str, Any]:
        """Log in once (a refused login fails here, at prepare); the server's version."""
        conn = self.connect()
        try:
            with self.errors("reading the server's version"), conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
        finally:
            conn.close()
        return {"server_version": row[0] if row else None}

    def redact(self, text: str) -> str:
        return redact(text, self.password) if self.password else text

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """PyMySQL's errors raised while `doing` as davit's, naming user and server, never the password."""
        try:
            yield
        except DavitError:
            raise
        except cdriver.ERRORS as exc:  # both drivers' errors carry (code, message)
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            detail = self.redact(str(exc.args[1]) if len(exc.args) > 1 else str(exc))
            who = f"{self.what}: user {self.user!r} on {self.where}"
            if code in ACCESS_DENIED:
                raise MysqlAuthFailed(
                    f"{who}: login or access refused while {doing} (check the user, its password and its grants): "
                    f"{detail} (error {code})"
                ) from None
            if code in TRANSIENT or (isinstance(exc, cdriver.OPERATIONAL) and code is not None and code >= 2000):
                raise MysqlUnreachable(f"{who}: server unreachable or busy while {doing}: {detail} (error {code})") from None
            raise MysqlRefused(f"{who}: the server refused {doing}: {detail} (error {code})") from None
        except OSError as exc:
            raise os_error(exc, f"{self.what}: {doing} on {self.where}", MysqlUnreachable, MysqlRefused, self.redact) from None

"""The C driver (mysqlclient, `MySQLdb`) for the connections that stream a backup's rows.

Measured (bench/sql.py, README): reading a table through PyMySQL costs about four times the
client CPU of reading it through mysqlclient, whose protocol parsing is libmariadb's C; with
PyMySQL the backup ran at ~0.35x of `mariadb-dump | zstd`. So the connections that read rows
(`snapshot.ConsistentConnections`) use mysqlclient when it is installed (it needs
libmariadb-dev and a compiler to build: README, "MariaDB/MySQL"), and PyMySQL otherwise, with
the same results: the chunks, and so the repository's format, do not depend on the driver
(tests/integration/mysql/test_mysql_driver.py backs the same database up through both).

Same results means the same Python types: PyMySQL with its decoders off (`ENCODERS_ONLY`)
gives every non-binary column as `str` (numbers and dates as the server's text) and binary
strings as `bytes`; mysqlclient does the same when every field type converts through `str`
(`TEXT_RESULTS`: its C code decodes text to `str` and keeps a binary-charset string `bytes`).
Everything else (listing, the restore, accounts) stays on PyMySQL, where speed does not matter.
"""

from __future__ import annotations

from typing import Any

import pymysql

try:
    import MySQLdb
    import MySQLdb.connections
    import MySQLdb.cursors
except ImportError:  # not installed (it needs a compiler and libmariadb-dev): PyMySQL reads the rows
    MySQLdb = None

PREFER_C = True  # tests set it to False to read through PyMySQL on a machine that has both

# Every field type through `str`: the server's text, as PyMySQL's ENCODERS_ONLY leaves it.
TEXT_RESULTS: dict[int, Any] = {t: str for t in range(256)}

ERRORS: tuple[type[Exception], ...] = (pymysql.err.MySQLError,) + ((MySQLdb.MySQLError,) if MySQLdb else ())
OPERATIONAL: tuple[type[Exception], ...] = (pymysql.err.OperationalError,) + ((MySQLdb.OperationalError,) if MySQLdb else ())


def in_use() -> bool:
    """Whether the rows are read through mysqlclient."""
    return PREFER_C and MySQLdb is not None


def name() -> str:
    """The driver reading the rows, with its version (recorded in the run's details)."""
    if in_use():
        return "mysqlclient " + ".".join(str(p) for p in MySQLdb.version_info[:3])
    return f"PyMySQL {pymysql.__version__}"


def connect(kwargs: dict[str, Any]) -> Any:
    """A mysqlclient connection from the keyword arguments `client.Server` gives PyMySQL."""
    args = {k: v for k, v in kwargs.items() if k not in ("program_name", "conv")}
    return MySQLdb.connect(**args, conv=TEXT_RESULTS)


def is_c(conn: Any) -> bool:
    return MySQLdb is not None and isinstance(conn, MySQLdb.connections.Connection)


def stream_cursor(conn: Any) -> Any:
    """An unbuffered cursor (rows stream, nothing is staged whole) of either driver's connection."""
    if is_c(conn):
        return conn.cursor(MySQLdb.cursors.SSCursor)
    return conn.cursor(pymysql.cursors.SSCursor)

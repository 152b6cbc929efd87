"""A table's `COPY ... TO STDOUT` read through `psql`, at the run's exported snapshot.

Why a subprocess: the server sends one CopyData message per row, and any Python reader pays
per row. py-spy on pgbench_accounts (7 million rows of ~120 bytes): psycopg's `Copy`
iterator took most of a backup's time (~0.34x of `pg_dump -Fd -j2`); one `get_copy_data`
call per row through psycopg's compiled libpq wrapper still ~1 µs of Python per row (6-7 CPU
seconds, ~0.3x). `psql` does the per-row work in C (1.0 CPU second for the same table) and
davitd reads its stdout straight into the chunker's reused buffer (`Chunker.cut_into`); both
run on their own cores.

The bytes are those psycopg's COPY gave (the repository's chunks do not change, so a backup
after this change deduplicates against the ones before): the script joins the exported
snapshot, then sets the session settings that shape COPY's text (client encoding, DateStyle,
IntervalStyle, TimeZone, extra_float_digits) to the values of the davit connection that joined
the same snapshot, then copies. The password reaches psql only through PGPASSFILE
(`Server.passfile_env`); its stderr goes to a file, its failure is classified as pg_dump's are.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from davit.adapters.postgres.client import Server, finish_tool, tool

READ_SIZE = 1 << 20
# session settings that change how COPY writes values as text
SETTINGS = ("client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits")


def script(conn: psycopg.Connection[Any], snapshot: str, query: sql.Composable) -> bytes:
    """psql's input: join `snapshot`, take `conn`'s COPY-shaping settings, run `query`."""
    lines = ["BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;"]
    lines.append(sql.SQL("SET TRANSACTION SNAPSHOT {};").format(sql.Literal(snapshot)).as_string(conn))
    for name in SETTINGS:
        value = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name.lower()))).fetchone()[0]  # type: ignore[index]
        lines.append(sql.SQL("SET {} TO {};").format(sql.Identifier(name.lower()), sql.Literal(value)).as_string(conn))
    lines += [query.as_string(conn) + ";", "COMMIT;", ""]
    return "\n".join(lines).encode()


@contextmanager
def copy_out(server: Server, db: str, text: bytes, doing: str) -> Iterator[io.RawIOBase]:
    """Run `psql` with the script `text` against `db`; its stdout, unbuffered (`readinto`
    reads the pipe straight into the caller's buffer). Raises the classified error if psql
    fails (once the block ends, after the last byte)."""
    argv = [tool("psql"), *server.tool_args(db), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    with server.passfile_env() as env, tempfile.TemporaryFile() as errfile, tempfile.TemporaryFile() as infile:
        infile.write(text)
        infile.seek(0)
        proc = subprocess.Popen(argv, stdin=infile, stdout=subprocess.PIPE, stderr=errfile, env=env, bufsize=0)
        assert isinstance(proc.stdout, io.RawIOBase)
        try:
            yield proc.stdout
        finally:
            proc.stdout.close()  # a reader that stopped early: psql ends on the closed pipe
            proc.wait()
        finish_tool(server, proc, errfile, argv, doing)


def copy_blocks(server: Server, db: str, text: bytes, doing: str) -> Iterator[bytes]:
    """`copy_out`'s bytes in blocks (any size, any boundary)."""
    with copy_out(server, db, text, doing) as stdout:
        while block := stdout.read(READ_SIZE):
            yield block

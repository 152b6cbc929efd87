"""A MariaDB/MySQL snapshot as one SQL script the `mariadb` client replays: `davit export sql`.

The script does what mysql.restore does, in the same order and with the same session settings
(`client.SESSION_SETUP`): per database `CREATE DATABASE IF NOT EXISTS` (under its new name
when renamed) and `USE`; each table dropped and created from its definition; each table's rows
as the snapshot's INSERT statements, chunk after chunk in order (a data-only table is emptied
first, as the restore does); then views (each after the views it reads), functions,
procedures, triggers and events, each under the `sql_mode` and character set it was created
with, behind a `DELIMITER` that does not occur in its text. The client turns CR LF into LF
when it reads a script (unless `--binary-mode`): the rows' carriage returns are written `\\r`;
one in a definition (a routine's body written on Windows) needs `mariadb --binary-mode`. The
snapshot's statements name no database, so the script follows a rename. Accounts are not written (a script that changes
users is a different thing to hand someone). Chunks are read (and verified) one at a time:
nothing is held whole.

The script is UTF-8, and its first line is the client's own command `\\C utf8mb4` (honoured
even with `--binary-mode`, as DELIMITER is): the client splits a script into statements with
ITS character set, and one whose default is sjis, cp932, gbk or big5 reads some UTF-8
sequences as its two-byte characters, the second byte swallowing the backslash before a quote
or the backquote closing a name: a value would end early and the rest of it run as SQL. `SET
NAMES` alone tells only the server. A system-versioned table's rows carry their row start and
end (its history): they are written under `system_versioning_insert_history = 1`.

A row's INSERT can be far larger than the `max_allowed_packet` the client and server replaying
the script accept (BLOBs are written in hex; a 24 MB blob is a 48 MB statement), and the
client cannot send a statement over it. So each INSERT over `packet` (16 MiB, MariaDB's
default for both, or `--max-allowed-packet`) is written in pieces under it, as mysql.restore
sends it (`pieces.py`): fewer rows per INSERT, and a row too large alone has its largest values
built in user variables first. After each value built, a guard ends the replay with an error
naming the table when the server cut the variable to NULL (it caps a string at its
max_allowed_packet), where the INSERT would have stored NULL. A single value over `packet` is
refused at export, naming the table and the setting that would take it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from davit.adapters.mysql import pieces
from davit.adapters.mysql.client import SESSION_SETUP, SQL_MODE, quote_name, quote_text
from davit.adapters.mysql.layout import DatabaseEntry, Entry, TableEntry
from davit.adapters.mysql.restore import create_database_as
from davit.adapters.mysql.schema import is_versioned

DROP = {"view": "VIEW", "procedure": "PROCEDURE", "function": "FUNCTION", "trigger": "TRIGGER", "event": "EVENT"}
DELIMITERS = (";;", "$$", "//", "@@", "#;#;")
PACKET = 16 << 20  # MariaDB's default max_allowed_packet, the server's and the mariadb client's
RESET = f"SET SESSION sql_mode = '{SQL_MODE}', character_set_client = 'utf8mb4', collation_connection = 'utf8mb4_general_ci';\n"


def script(
    entries: Sequence[Entry], read: Callable[[bytes], bytes], rename: dict[str, str], heading: str, packet: int = PACKET
) -> Iterator[bytes]:
    """The script's bytes, piece by piece, for the databases and tables of `entries`, no
    statement longer than `packet - 1` bytes but a table's or object's definition."""
    yield b"\\C utf8mb4\n"  # first: the client reads what follows as UTF-8, whatever its default
    yield "".join(f"-- {line}\n" for line in heading.splitlines()).encode()
    yield f"SET NAMES utf8mb4;\n{SESSION_SETUP};\n".encode()
    tables = [e for e in entries if isinstance(e, TableEntry)]
    databases = {e.db: e for e in entries if isinstance(e, DatabaseEntry)}
    for db in sorted({t.db for t in tables} | set(databases)):
        dst = rename.get(db, db)
        entry = databases.get(db)
        create = entry.create if entry is not None else f"CREATE DATABASE {quote_name(db)}"
        yield f"\n-- database {dst}\n{create_database_as(create, db, dst)};\nUSE {quote_name(dst)};\n".encode()
        mine = [t for t in tables if t.db == db]
        for table in mine:
            if table.create is not None:
                name = quote_name(table.table)
                yield f"\n-- table {dst}.{table.table}\nDROP TABLE IF EXISTS {name};\n{table.create};\n".encode()
        for table in mine:
            if table.data:
                yield from _rows(table, dst, read, packet)
        if entry is not None:
            for obj in _views_first(entry.objects):
                yield _object(dst, obj).encode()
    yield b"\n-- end of the davit export\n"


def _rows(table: TableEntry, dst: str, read: Callable[[bytes], bytes], packet: int) -> Iterator[bytes]:
    """A table's rows: its INSERT statements under the session settings they were written for."""
    yield f"\n-- rows of {dst}.{table.table}: {table.rows}\n".encode()
    if table.create is None:
        yield f"DELETE FROM {quote_name(table.table)};\n".encode()
    if table.load_mode is not None:
        yield f"SET SESSION sql_mode = {quote_text(table.load_mode)};\n".encode()
    history = is_versioned(table.create)
    if history:
        yield b"SET SESSION system_versioning_insert_history = 1;\n"
    name = f"{dst}.{table.table}"
    for chunk in table.chunks:
        yield from _in_pieces(_cr_escaped(read(bytes.fromhex(chunk))), packet, name)
    if history:
        yield b"SET SESSION system_versioning_insert_history = 0;\n"
    if table.load_mode is not None:
        yield f"SET SESSION sql_mode = '{SQL_MODE}';\n".encode()


def _in_pieces(statement: bytes, packet: int, table: str) -> Iterator[bytes]:
    """An INSERT as statements under `packet` (`pieces.split`; one under it as it is), each
    ended by `;`, a check of a built value as a guard that fails the replay."""
    remedy = f"on the target server and export again with --max-allowed-packet {packet} raised to it"
    for piece in pieces.split(statement, packet, table, remedy):
        if pieces.is_check(piece):
            yield _guard(pieces.checked_variable(piece), table, packet)
        else:
            yield piece if piece[-8:].rstrip().endswith(b";") else piece + b";\n"


def _guard(variable: bytes, table: str, packet: int) -> bytes:
    """A compound IF (MariaDB runs one outside a routine) that signals an error naming `table`
    when `variable` is NULL: the server cut it, its max_allowed_packet is under the value's."""
    said = f"davit: a value of {table} is larger than this server's max_allowed_packet; the script was cut for {packet}"
    text = f"IF {variable.decode()} IS NULL THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {quote_text(said[:500])}; END IF"
    delimiter = next((d for d in DELIMITERS if d not in text), ";" + "#" * len(text) + ";")
    return f"DELIMITER {delimiter}\n{text}{delimiter}\nDELIMITER ;\n".encode()


def _cr_escaped(statement: bytes) -> bytes:
    """An INSERT statement whose values' carriage returns are written `\\r`: the `mariadb`
    client reads its input by lines and turns CR LF into LF, even inside a quoted string. After
    VALUES a CR can only be inside a quoted string (the others are hex, bits, numbers, NULL),
    where `\\r` means CR; the head (table and column names) is left as it is."""
    if b"\r" not in statement:
        return statement
    head = _values_at(statement)
    return statement[:head] + statement[head:].replace(b"\r", b"\\r")


def _values_at(statement: bytes) -> int:
    """Where the VALUES keyword of an INSERT ends, backquoted names skipped."""
    blanked = re.sub(rb"`(?:[^`]|``)*`", lambda m: b" " * len(m.group(0)), statement)
    found = re.search(rb"\bVALUES\b", blanked, re.I)
    return found.end() if found else len(statement)


def _object(dst: str, obj: dict[str, str]) -> str:
    kind, name, create = obj["type"], obj["name"], obj["create"]
    delimiter = next((d for d in DELIMITERS if d not in create), None)
    if delimiter is None:  # every one occurs in it: one made of its absence
        delimiter = ";" + "#" * (max(len(create), 1)) + ";"
    out = f"\n-- {kind} {dst}.{name}\n"
    charset, collation = quote_text(obj["charset"]), quote_text(obj["collation"])
    out += f"SET SESSION character_set_client = {charset}, collation_connection = {collation};\n"
    if obj["sql_mode"] or kind != "view":
        out += f"SET SESSION sql_mode = {quote_text(obj['sql_mode'])};\n"
    out += f"DROP {DROP[kind]} IF EXISTS {quote_name(name)};\n"
    out += f"DELIMITER {delimiter}\n{create}{delimiter}\nDELIMITER ;\n"
    return out + RESET


def _views_first(objects: list[dict[str, str]]) -> list[dict[str, str]]:
    """The objects with each view after the views its definition names (by their quoted name),
    then the others in the snapshot's order (routines, triggers, events)."""
    views = {o["name"]: o for o in objects if o["type"] == "view"}
    ordered: list[dict[str, str]] = []
    placed: set[str] = set()

    def place(name: str, seen: frozenset[str]) -> None:
        if name in placed or name in seen:
            return
        for other in views:
            if other != name and quote_name(other) in views[name]["create"]:
                place(other, seen | {name})
        placed.add(name)
        ordered.append(views[name])

    for name in views:
        place(name, frozenset())
    return ordered + [o for o in objects if o["type"] != "view"]

"""Reading what a restore needs besides the rows: databases, tables, columns, key order, and
the objects created after the data (views, functions, procedures, triggers, events).

Definitions come from the server's own `SHOW CREATE` statements, read after `USE db` so that
the server leaves the database's name out of what lives in it (a restore may rename it);
names of other databases written inside a body (a procedure that reads `other.t`) stay as
written. Each view, routine and trigger is kept with the `sql_mode` and character set it was
created under, which the restore sets again before creating it, as mariadb-dump does.
"""

from __future__ import annotations

import re
from typing import Any

from davit.adapters.mysql.client import quote_name, quote_text

# What a transaction sees as of its snapshot: the engines whose rows are consistent across tables.
TRANSACTIONAL = {"InnoDB"}
# A SEQUENCE is a table of one row (its state: next_not_cached_value, bounds, increment, cache,
# cycle): SHOW CREATE TABLE gives `CREATE TABLE ... SEQUENCE=1`, and inserting that row into a
# new sequence sets its state, as mariadb-dump's SETVAL does.
TABLE_TYPES = ("BASE TABLE", "SYSTEM VERSIONED", "SEQUENCE")
_SEQUENCE_OPTION = re.compile(r"\bSEQUENCE\s*=\s*1\b", re.I)


# A system-versioned table's period: explicit columns (`PERIOD FOR SYSTEM_TIME (`s`, `e`)`) or
# the implicit ROW_START/ROW_END, which SHOW CREATE TABLE does not list.
_PERIOD = re.compile(r"PERIOD FOR SYSTEM_TIME \((`(?:[^`]|``)+`), (`(?:[^`]|``)+`)\)")
_VERSIONED = re.compile(r"\n\) [^\n]*\bWITH SYSTEM VERSIONING\b")


def is_versioned(create: str | None) -> bool:
    """Does a table definition keep history (`WITH SYSTEM VERSIONING` among the table's options)?"""
    return create is not None and _VERSIONED.search(create) is not None


def system_period(create: str) -> tuple[str, str, str] | None:
    """(row start column, row end column, their data type) of a system-versioned table, None
    for another table. The type is `timestamp` for timestamp versioning; `bigint` for
    transaction-precise versioning, whose values are the source server's transaction ids."""
    if not is_versioned(create):
        return None
    found = _PERIOD.search(create)
    if found is None:
        return "ROW_START", "ROW_END", "timestamp"
    start, end = (q[1:-1].replace("``", "`") for q in (found[1], found[2]))
    typed = re.search("^  " + re.escape(found[1]) + r" (\w+)", create, re.M)
    return start, end, typed[1].lower() if typed else ""


def is_sequence(create: str | None) -> bool:
    """Does a table definition create a sequence (`SEQUENCE=1` among its options, after the columns)?"""
    return create is not None and _SEQUENCE_OPTION.search(create.rsplit(")", 1)[-1]) is not None


def one(cur: Any, sql: str) -> Any:
    cur.execute(sql)
    row = cur.fetchone()
    return row


def databases(cur: Any) -> list[str]:
    cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
    return [str(r[0]) for r in cur.fetchall()]


def tables(cur: Any, db: str) -> list[tuple[str, str, str]]:
    """(name, TABLE_TYPE, engine) of every table and view of `db`, sorted by name."""
    cur.execute(
        "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = {quote_text(db)} ORDER BY TABLE_NAME"
    )
    return [(str(n), str(t), str(e)) for n, t, e in cur.fetchall()]


def estimated_rows(cur: Any, db: str, table: str) -> int | None:
    """The server's estimate of a table's rows (`TABLE_ROWS`: InnoDB samples it, it can be off
    by a good fraction; exact for MyISAM/Aria), for progress only; None when it has none."""
    cur.execute(
        "SELECT TABLE_ROWS FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = {quote_text(db)} AND TABLE_NAME = {quote_text(table)}"
    )
    row = cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None and int(row[0]) >= 0 else None


def columns(cur: Any, db: str, table: str) -> list[tuple[str, str, bool]]:
    """The columns a row is restored into: all but generated ones (invisible ones included:
    `SELECT *` would leave those out), in their order: (name, data type, has a character set)."""
    cur.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME IS NOT NULL FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = {quote_text(db)} AND TABLE_NAME = {quote_text(table)} AND IS_GENERATED = 'NEVER' "
        "ORDER BY ORDINAL_POSITION"
    )
    return [(str(n), str(t).lower(), str(c) == "1") for n, t, c in cur.fetchall()]


def order_by(cur: Any, db: str, table: str, cols: list[str]) -> list[str]:
    """A deterministic row order: the primary key, else the first unique key whose columns are
    all NOT NULL, else every column."""
    cur.execute(
        "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE FROM information_schema.STATISTICS s "
        "JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME "
        "AND c.COLUMN_NAME = s.COLUMN_NAME "
        f"WHERE s.TABLE_SCHEMA = {quote_text(db)} AND s.TABLE_NAME = {quote_text(table)} AND s.NON_UNIQUE = 0 "
        "ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX"
    )
    keys: dict[str, list[tuple[str, str]]] = {}
    for index, column, nullable in cur.fetchall():
        keys.setdefault(str(index), []).append((str(column), str(nullable)))
    for key in keys.values():
        if all(nullable == "NO" for _, nullable in key):
            return [column for column, _ in key]
    return cols


def create_table(cur: Any, table: str) -> str:
    """SHOW CREATE TABLE, on a connection whose current database is the table's."""
    return str(one(cur, f"SHOW CREATE TABLE {quote_name(table)}")[1])


def create_database(cur: Any, db: str) -> str:
    return str(one(cur, f"SHOW CREATE DATABASE {quote_name(db)}")[1])


def objects(cur: Any, db: str) -> list[dict[str, str]]:
    """Views, functions, procedures, triggers and events of `db`, in the order a restore creates
    them, each as {type, name, create, sql_mode, charset, collation}; the connection's current
    database becomes `db`."""
    cur.execute(f"USE {quote_name(db)}")
    found: list[dict[str, str]] = []
    cur.execute(f"SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {quote_text(db)} ORDER BY TABLE_NAME")
    for (name,) in cur.fetchall():
        row = one(cur, f"SHOW CREATE VIEW {quote_name(str(name))}")
        found.append(
            {
                "type": "view",
                "name": str(name),
                "create": str(row[1]),
                "sql_mode": "",
                "charset": str(row[2]),
                "collation": str(row[3]),
            }
        )
    cur.execute(
        "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
        f"WHERE ROUTINE_SCHEMA = {quote_text(db)} ORDER BY ROUTINE_TYPE, ROUTINE_NAME"
    )
    for kind, name in cur.fetchall():
        row = one(cur, f"SHOW CREATE {kind} {quote_name(str(name))}")
        found.append(_object(str(kind).lower(), str(name), row[2], row[1], row[3], row[4]))
    cur.execute(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
        f"WHERE TRIGGER_SCHEMA = {quote_text(db)} ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER"
    )
    for (name,) in cur.fetchall():
        row = one(cur, f"SHOW CREATE TRIGGER {quote_name(str(name))}")
        found.append(_object("trigger", str(name), row[2], row[1], row[3], row[4]))
    cur.execute(f"SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {quote_text(db)} ORDER BY EVENT_NAME")
    for (name,) in cur.fetchall():
        row = one(cur, f"SHOW CREATE EVENT {quote_name(str(name))}")
        found.append(_object("event", str(name), row[3], row[1], row[4], row[5]))
    return found


def _object(kind: str, name: str, create: Any, sql_mode: Any, charset: Any, collation: Any) -> dict[str, str]:
    return {
        "type": kind,
        "name": name,
        "create": str(create),
        "sql_mode": str(sql_mode),
        "charset": str(charset),
        "collation": str(collation),
    }


# The server's own accounts: never kept (a restore must not touch root's grants or password).
SYSTEM_ACCOUNTS = {"root", "mariadb.sys", "mysql", "PUBLIC"}
_GRANT_PASSWORD = re.compile(r" IDENTIFIED (?:BY PASSWORD|VIA \S+ USING) '[^']*'")


def accounts(cur: Any) -> list[str]:
    """Roles and users with their password hashes and grants, as statements a restore replays
    in order: roles, users (`CREATE ... IF NOT EXISTS`: an account the target has keeps its
    password), then every grant (without the password clause SHOW GRANTS adds to USAGE, for the
    same reason) and default roles."""
    cur.execute("SELECT User, Host, is_role FROM mysql.user ORDER BY is_role DESC, User, Host")
    found = [(str(u), str(h), str(r) == "Y") for u, h, r in cur.fetchall() if str(u) not in SYSTEM_ACCOUNTS]
    creates, grants = [], []
    for user, host, is_role in found:
        who = quote_name(user) if is_role else f"{quote_name(user)}@{quote_name(host)}"
        if is_role:
            creates.append(f"CREATE ROLE IF NOT EXISTS {who}")
        else:
            create = str(one(cur, f"SHOW CREATE USER {who}")[0])
            creates.append(create.replace("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1))
        cur.execute(f"SHOW GRANTS FOR {who}")
        grants += [_GRANT_PASSWORD.sub("", str(r[0])) for r in cur.fetchall()]
    return creates + [g for g in grants if g.startswith("GRANT")] + [g for g in grants if not g.startswith("GRANT")]

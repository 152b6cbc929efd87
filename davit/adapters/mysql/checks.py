"""Pre-flight checks of the MySQL/MariaDB kinds (`davit check`), through the adapter's `Server`
(credentials resolved as a run does, errors translated and redacted at its boundary).

Read-only: the privileges are read from `information_schema` (the current user's own rows),
never tried. A backup reads every table (SELECT) from one consistent point: with RELOAD it
takes FLUSH TABLES WITH READ LOCK for a moment to start its parallel readers together, without
it the tables are read one after another through one connection (slower, still consistent): a
warning. Accounts need SELECT on the `mysql` schema. A restore creates databases and loads
rows (CREATE, INSERT; DROP with `if_exists = "drop"`; CREATE USER with `users`).
"""

from __future__ import annotations

from typing import Any

from davit.adapters.mysql.client import Server
from davit.adapters.mysql.layout import KIND, read_tree
from davit.adapters.mysql.restore import restore_selection
from davit.domain.checks import CheckInputs, Checklist
from davit.domain.jobs import MysqlBackupJob, MysqlRestoreJob
from davit.domain.jobs.mysql import SYSTEM_DATABASES, MysqlServer

LISTED = 5


def _connect(cl: Checklist, subject: str, spec: MysqlServer) -> tuple[Server, Any] | None:
    with cl.check(subject, "credentials") as c:
        server = Server(spec, subject)
        c.ok(f"user {server.user}: password {'from ' + str(spec.defaults_file) if spec.defaults_file else 'resolved'}")
    if not c.passed:
        return None
    with cl.check(subject, "connects") as c:
        conn = server.connect()
        c.ok(f"{server.where} as {server.user}")
    if not c.passed:
        return None
    with cl.check(subject, "server version") as c, server.errors("reading the version"), conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        major = int(version.split(".", 1)[0]) if version.split(".", 1)[0].isdigit() else 0
        if major < 5 or (major == 5 and "mariadb" not in version.lower() and not version.startswith("5.7")):
            c.fail(f"{version} at {server.where}: davit needs MySQL 5.7+ or MariaDB 10+")
        else:
            c.ok(version)
    return server, conn


def _privileges(server: Server, conn: Any, database: str | None = None) -> set[str]:
    """The current user's global privileges (with a database: and those on it)."""
    with server.errors("reading the user's privileges"), conn.cursor() as cur:
        cur.execute("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES")
        found = {str(r[0]) for r in cur.fetchall()}
        if database is not None:
            cur.execute("SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE TABLE_SCHEMA = %s", (database,))
            found |= {str(r[0]) for r in cur.fetchall()}
    return found


def backup_checks(inputs: CheckInputs) -> None:
    spec: MysqlBackupJob = inputs.spec
    cl = inputs.checklist
    opened = _connect(cl, "source", spec.source)
    if opened is not None:
        server, conn = opened
        try:
            _backup_privileges(cl, server, conn, spec)
        finally:
            conn.close()
    inputs.check_repository(spec.repository)


def _backup_privileges(cl: Checklist, server: Server, conn: Any, spec: MysqlBackupJob) -> None:
    with cl.check("source", "databases") as c, server.errors("listing databases"), conn.cursor() as cur:
        cur.execute("SHOW DATABASES")  # only those this user has some privilege on
        visible = {str(r[0]) for r in cur.fetchall()}
        wanted = spec.source.databases or sorted(visible - set(SYSTEM_DATABASES))
        hidden = [d for d in wanted if d not in visible]
        if hidden:
            c.fail(f"{server.user} at {server.where} cannot see {', '.join(hidden[:LISTED])} (missing, or no privilege on it)")
        else:
            c.ok(f"{len(wanted)}: {', '.join(wanted[:LISTED])}{' ...' if len(wanted) > LISTED else ''}")
    for db in [d for d in wanted if d in visible]:
        with cl.check("source", f"database {db}") as c:
            if "SELECT" in _privileges(server, conn, db):
                c.ok(f"{server.user} may SELECT")
            else:
                c.warn(f"{server.user} has no SELECT on all of {db} (only some tables may be readable)")
    glob = _privileges(server, conn)
    with cl.check("source", "consistent start") as c:
        if "RELOAD" in glob:
            c.ok("RELOAD: FLUSH TABLES WITH READ LOCK starts the parallel readers at one point")
        else:
            c.warn(f"{server.user} lacks RELOAD: the tables will be read one after another through one connection")
    if spec.source.users:
        with cl.check("source", "accounts") as c:
            if "SELECT" in _privileges(server, conn, "mysql"):
                c.ok("the mysql schema is readable")
            else:
                c.fail(f"{server.user} may not SELECT from the mysql schema (needed for users = true)")


def restore_checks(inputs: CheckInputs) -> None:
    spec: MysqlRestoreJob = inputs.spec
    cl = inputs.checklist
    found = inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, KIND) is not None
    opened = _connect(cl, "target", spec.target)
    if opened is None:
        return
    server, conn = opened
    try:
        needed = {"CREATE", "INSERT", "ALTER", "INDEX"} | ({"DROP"} if spec.target.if_exists == "drop" else set())
        if spec.target.users:
            needed.add("CREATE USER")
        with cl.check("target", "privileges") as c:
            lacking = sorted(needed - _privileges(server, conn))
            if lacking:
                # (granted per database instead, they would do: not a FAIL on what is not seen)
                c.warn(f"{server.user} at {server.where} lacks global {', '.join(lacking)} (granted per database?)")
            else:
                c.ok(f"{server.user} has {', '.join(sorted(needed))}")
        if found and spec.target.if_exists == "fail":
            _targets_free(inputs, server, conn, spec)
    finally:
        conn.close()


def _targets_free(inputs: CheckInputs, server: Server, conn: Any, spec: MysqlRestoreJob) -> None:
    """With `if_exists = "fail"`, a database the restore would create that exists already makes
    the run fail: a warning (it may be dropped before the run), naming the databases. Which
    ones the restore creates is read from the snapshot's tree, as the run reads it."""
    with inputs.checklist.check("target", "databases") as c:
        entries = list(read_tree(inputs.snapshot_tree(spec.repository)))
        _chosen, pairs = restore_selection(entries, spec.target)
        names = [dst for _src, dst in pairs]
        with server.errors("listing databases"), conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            present = {str(r[0]) for r in cur.fetchall()}
        taken = [n for n in names if n in present]
        if taken:
            c.warn(
                f"{', '.join(taken[:LISTED])}{' ...' if len(taken) > LISTED else ''} exist(s) on {server.where}: with "
                "if_exists = 'fail' the run will fail (drop them first, or use 'drop' or 'merge')"
            )
        else:
            c.ok(f"none of {', '.join(names[:LISTED])}{' ...' if len(names) > LISTED else ''} exists yet")

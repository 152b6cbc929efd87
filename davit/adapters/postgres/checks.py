"""Pre-flight checks of the PostgreSQL kinds (`davit check`), through the adapter's own `Server`
(credentials resolved as a run resolves them, errors translated and redacted by its boundary).

Read-only: every query runs in a transaction that is rolled back. A backup needs to CONNECT to
each database, SELECT every table it keeps and export a snapshot (`pg_export_snapshot` in a
REPEATABLE READ, READ ONLY transaction, which is how the parallel readers share one point in
time; no REPLICATION attribute is needed); the cluster's roles with password hashes need a
superuser. A restore creates databases (CREATEDB) and, with roles, roles (CREATEROLE).
"""

from __future__ import annotations

from typing import Any

from davit.adapters.postgres.client import Server
from davit.domain.checks import CheckInputs, Checklist
from davit.domain.jobs import PostgresBackupJob, PostgresRestoreJob
from davit.domain.jobs.postgres import PostgresServer

OLDEST_SUPPORTED = 120000  # server_version_num of PostgreSQL 12
LISTED = 5  # tables named in a verdict; the rest counted


def _connect(cl: Checklist, subject: str, spec: PostgresServer) -> tuple[Server, Any] | None:
    with cl.check(subject, "credentials") as c:
        server = Server(spec, subject)
        c.ok(f"user {server.user or '(default)'}: password {'resolved' if server.password else 'none (peer or trust)'}")
    if not c.passed:
        return None
    with cl.check(subject, "connects") as c:
        conn = server.connect(autocommit=False)
        c.ok(f"{server.where} as {server.user or '(default)'}, database {server.maintenance_db}")
    if not c.passed:
        return None
    with cl.check(subject, "server version") as c, server.errors("reading the version"):
        num = int(conn.info.server_version)
        text = str(conn.info.parameter_status("server_version") or num)
        if num < OLDEST_SUPPORTED:
            c.fail(f"PostgreSQL {text} at {server.where}; davit needs 12 or newer")
        else:
            c.ok(f"PostgreSQL {text}")
    return server, conn


def _role(server: Server, conn: Any) -> dict[str, Any]:
    with server.errors("reading the role's attributes"):
        row = conn.execute(
            "SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    return {"name": row[0], "super": row[1], "createdb": row[2], "createrole": row[3]}


def backup_checks(inputs: CheckInputs) -> None:
    spec: PostgresBackupJob = inputs.spec
    cl = inputs.checklist
    opened = _connect(cl, "source", spec.source)
    if opened is not None:
        server, conn = opened
        try:
            _backup_privileges(cl, server, conn, spec)
        finally:
            conn.rollback()
            conn.close()
    inputs.check_repository(spec.repository)


def _backup_privileges(cl: Checklist, server: Server, conn: Any, spec: PostgresBackupJob) -> None:
    role = _role(server, conn)
    with cl.check("source", "databases") as c, server.errors("listing databases"):
        rows = conn.execute(
            "SELECT datname, has_database_privilege(datname, 'CONNECT') FROM pg_database WHERE NOT datistemplate"
        ).fetchall()
        present = {name: ok for name, ok in rows}
        wanted = spec.source.databases or sorted(present)
        missing = [d for d in wanted if d not in present]
        denied = [d for d in wanted if present.get(d) is False]
        if missing or denied:
            problems = [_named("no such database", missing), _named(f"{role['name']} may not CONNECT to", denied)]
            c.fail("; ".join(p for p in problems if p))
        else:
            c.ok(f"{len(wanted)}: {', '.join(wanted[:LISTED])}{' ...' if len(wanted) > LISTED else ''}")
    for db in [d for d in wanted if present.get(d)]:
        _database_readable(cl, server, db)
    if spec.roles:
        with cl.check("source", "roles") as c:
            if role["super"]:
                c.ok(f"{role['name']} is a superuser: role password hashes can be read")
            else:
                c.warn(f"{role['name']} is not a superuser: roles are kept without their password hashes")


def _database_readable(cl: Checklist, server: Server, db: str) -> None:
    with cl.check("source", f"database {db}") as c:
        conn = server.connect(db)
        try:
            with server.errors(f"reading database {db}'s privileges"):
                denied = [
                    f"{schema}.{name}"
                    for schema, name in conn.execute(
                        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE c.relkind IN ('r', 'p', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                        " AND n.nspname NOT LIKE 'pg_toast%' AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1, 2"
                    ).fetchall()
                ]
                conn.rollback()
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute("SELECT pg_export_snapshot()")
        finally:
            conn.rollback()
            conn.close()
        if denied:
            c.fail(_named(f"{server.user or 'this user'} may not SELECT", denied))
        else:
            c.ok("every table readable; a snapshot can be exported")


def _named(what: str, names: list[str]) -> str:
    if not names:
        return ""
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return f"{what} {', '.join(names[:LISTED])}{more}"


def restore_checks(inputs: CheckInputs) -> None:
    spec: PostgresRestoreJob = inputs.spec
    cl = inputs.checklist
    inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, "postgres")
    opened = _connect(cl, "target", spec.target)
    if opened is None:
        return
    server, conn = opened
    try:
        role = _role(server, conn)
        with cl.check("target", "privileges") as c:
            lacking = [] if role["super"] or role["createdb"] else ["CREATEDB"]
            if spec.roles and not (role["super"] or role["createrole"]):
                lacking.append("CREATEROLE")
            if lacking:
                c.fail(f"{role['name']} at {server.where} lacks {', '.join(lacking)}")
            else:
                c.ok(f"{role['name']} may create databases" + (" and roles" if spec.roles else ""))
        _targets_free(cl, server, conn, spec)
    finally:
        conn.rollback()
        conn.close()


def _targets_free(cl: Checklist, server: Server, conn: Any, spec: PostgresRestoreJob) -> None:
    """With `if_exists = "fail"`, a target database the job names that exists already fails the run."""
    named = [spec.target.rename.get(d, d) for d in spec.target.databases] or list(spec.target.rename.values())
    if spec.target.if_exists != "fail" or not named:
        return
    with cl.check("target", "databases") as c, server.errors("listing databases"):
        present = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        taken = [d for d in named if d in present]
        if taken:
            c.fail(_named("if_exists is fail and these exist:", taken))
        else:
            c.ok(f"none of {', '.join(named[:LISTED])} exists yet")

"""The cluster's roles, read at backup and created again at restore (`roles = true`).

What `pg_dumpall --roles-only` keeps, read from the catalogs rather than as a script so that a
restore can decide role by role: attributes, password hash (SCRAM or md5, as stored: only a
superuser can read `pg_authid`; otherwise the roles are kept without passwords and the run
warns), memberships with their admin option, and per-role settings (`ALTER ROLE ... SET`).
Roles named `pg_*` are the server's own and are left alone.

At restore a role that does not exist is created with its attributes and its password hash
(PostgreSQL stores a hash given as the password as it is). A role that exists is kept as it is:
its attributes and password are not changed (a warning lists them), unless the job asks
`replace_role_passwords = true`, which sets the snapshot's hash. Memberships are granted where
missing (grants only add). A database's owner and its grants (`CONNECT`, `CREATE`, `TEMP`)
are recorded with its schema and applied to the restored database.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

ROLES = """
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,
       rolconnlimit, rolvaliduntil::text, {password}
FROM {catalog} WHERE rolname !~ '^pg_' ORDER BY 1
"""
MEMBERS = """
SELECT r.rolname, m.rolname, am.admin_option FROM pg_auth_members am
JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
WHERE m.rolname !~ '^pg_' ORDER BY 1, 2
"""
SETTINGS = """
SELECT r.rolname, c FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c
WHERE s.setdatabase = 0 AND r.rolname !~ '^pg_' ORDER BY 1, 2
"""
DATABASE_ACL = """
SELECT pg_get_userbyid(d.datdba), CASE WHEN d.datacl IS NULL THEN NULL ELSE array(
  SELECT json_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                          a.privilege_type, a.is_grantable)::text
  FROM aclexplode(d.datacl) a ORDER BY 1) END
FROM pg_database d WHERE d.datname = current_database()
"""
DATABASE_PRIVILEGES = {"CONNECT", "CREATE", "TEMPORARY"}
FLAGS = (
    ("SUPERUSER", "NOSUPERUSER"),
    ("INHERIT", "NOINHERIT"),
    ("CREATEROLE", "NOCREATEROLE"),
    ("CREATEDB", "NOCREATEDB"),
    ("LOGIN", "NOLOGIN"),
    ("REPLICATION", "NOREPLICATION"),
    ("BYPASSRLS", "NOBYPASSRLS"),
)


def read_roles(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The cluster's roles, memberships and role settings, as one JSON-able document."""
    superuser = bool(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])  # type: ignore[index]
    query = ROLES.format(password="rolpassword" if superuser else "NULL::text", catalog="pg_authid" if superuser else "pg_roles")
    roles = [
        {"name": r[0], "flags": list(r[1:8]), "connlimit": r[8], "valid_until": r[9], "password": r[10]}
        for r in conn.execute(query)
    ]
    members = [list(r) for r in conn.execute(MEMBERS)]
    settings = [list(r) for r in conn.execute(SETTINGS)]
    return {"roles": roles, "members": members, "settings": settings, "passwords": superuser}


def _role_options(role: dict[str, Any], with_password: bool) -> sql.Composable:
    words: list[sql.Composable] = [sql.SQL(yes if on else no) for (yes, no), on in zip(FLAGS, role["flags"], strict=True)]
    words.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(role["connlimit"]))))
    if role.get("valid_until"):
        words.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role["valid_until"])))
    if with_password and role.get("password"):
        words.append(sql.SQL("PASSWORD {}").format(sql.Literal(role["password"])))
    return sql.SQL(" ").join(words)


def apply_roles(conn: psycopg.Connection[Any], found: dict[str, Any], replace_passwords: bool) -> dict[str, Any]:
    """Create the roles the server lacks, grant missing memberships; the names of those kept."""
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
    created, kept, replaced = [], [], []
    for role in found["roles"]:
        name = sql.Identifier(role["name"])
        if role["name"] not in existing:
            conn.execute(sql.SQL("CREATE ROLE {} WITH ").format(name) + _role_options(role, True))
            created.append(role["name"])
            for r, setting in found["settings"]:
                if r == role["name"]:
                    key, _, value = str(setting).partition("=")
                    conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(name, sql.Identifier(key), sql.Literal(value)))
        else:
            kept.append(role["name"])
            if replace_passwords and role.get("password"):
                conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(name, sql.Literal(role["password"])))
                replaced.append(role["name"])
    have = {(r[0], r[1]) for r in conn.execute(MEMBERS)}
    granted = 0
    for role, member, admin in found["members"]:
        if (role, member) not in have:
            option = sql.SQL(" WITH ADMIN OPTION") if admin else sql.SQL("")
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member)) + option)
            granted += 1
    return {"created": created, "kept": kept, "passwords_replaced": replaced, "memberships_granted": granted}


def apply_database_acl(conn: psycopg.Connection[Any], dst: str, database: dict[str, Any]) -> None:
    """The source database's owner and grants onto the restored database `dst`."""
    target = sql.Identifier(dst)
    if database.get("owner"):
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target, sql.Identifier(database["owner"])))
    if database.get("acl") is None:
        return  # the default privileges, as a new database has
    import json

    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target))
    for item in database["acl"]:
        grantee, privilege, grantable = json.loads(item)
        if privilege not in DATABASE_PRIVILEGES:
            raise ValueError(f"unexpected database privilege {privilege!r} in the snapshot")
        who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        option = sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")
        conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(privilege), target, who) + option)

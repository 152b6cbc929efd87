"""postgres.restore: a postgres.backup snapshot into a server, under the same or another name.

Per database (target name after `rename`), steps in order:

- `create:DB` - `if_exists`: "fail" refuses a database that exists, "drop" drops it (ending
  its sessions) and creates it again, "merge" loads into it. A checkpoint is recorded before
  the CREATE, so a kill -9 between the CREATE and the step's completion is recognised on
  resume as this run's own database, not someone else's.
- `pre-data:DB` - `pg_restore --section=pre-data --single-transaction` from the schema
  archive's chunks on its stdin: all or nothing, so a resumed run meets no half schema.
  With "merge", objects that exist already are kept (pg_restore's errors become a warning).
- `table:DB.SCHEMA.TABLE` - `TRUNCATE ONLY` then `COPY (columns) FROM STDIN` of the table's
  chunks, in ONE transaction: a table half-loaded at a kill -9 was never committed, and is
  loaded again whole, never doubled. Tables run on `parallel` connections.
- `lo:DB` - the large objects with their oids, in one transaction (ones that exist are replaced).
- `post-data:DB` - `pg_restore --section=post-data --single-transaction` (indexes,
  constraints, triggers), then the sequences' values, then materialized views refreshed.
- `finish` verifies: every table's row count and every sequence's value against the snapshot.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from davit.adapters.parallel import Relay, run_parallel
from davit.adapters.postgres import toc
from davit.adapters.postgres.archive import custom_schema_archive, read_archive
from davit.adapters.postgres.client import PostgresRefused, Server, finish_tool, tool
from davit.adapters.postgres.layout import (
    LO_HEADER,
    ROLES_PATH,
    Unit,
    lo_path,
    qualified,
    read_tree,
    schema_path,
    table_path,
)
from davit.adapters.postgres.policies import fit_policies
from davit.adapters.postgres.roles import apply_database_acl, apply_roles
from davit.adapters.prefetch import calls_ahead
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.sqlrename import one_source_each
from davit.domain.errors import PermanentError
from davit.domain.jobs import PostgresRestoreJob
from davit.domain.jobs.postgres import select_tables
from davit.domain.ports import RunContext

LO_PIECE = 1 << 20  # bytes of a large object written at once
CREATE, PRE, TABLE, LO, POST, ROLES = "create:", "pre-data:", "table:", "lo:", "post-data:", "roles"
FOREIGN_KEYS = """
SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND EXISTS (SELECT 1 FROM unnest(%s::text[]) x WHERE to_regclass(x) IN (k.conrelid, k.confrelid))
ORDER BY 1, 2, 3
"""
EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
SETVAL = """
SELECT setval(c.oid, %s, %s) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'S'
"""


class PostgresRestoreWork(RunWork[PostgresRestoreJob]):
    def __init__(self, inputs: RunInputs[PostgresRestoreJob]) -> None:
        super().__init__(inputs)
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = Server(self.spec.target, f"postgres.restore {self.spec.name}")
        return self._server

    def plan(self) -> list[str]:
        steps = [ROLES] if self.spec.roles else []
        for db in self.details.get("databases", []):
            dst = db["target"]
            steps += [CREATE + dst, PRE + dst]
            steps += [_table_step(dst, s, t) for s, t in db["tables"]]
            steps += [LO + dst, POST + dst]
        return steps

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        src, tgt = self.spec.source, self.spec.target
        snap = self.repo.resolve(src.snapshot, src.job)
        if snap.kind != "postgres":
            raise PermanentError(f"snapshot {snap.id} is a {snap.kind} snapshot, not a PostgreSQL one")
        units = list(read_tree(self.repo.tree_bytes(snap)))
        if self.spec.roles and not any(u.kind == "roles" for u in units):
            raise PermanentError(f"snapshot {snap.id} holds no roles (its backup job had roles = false): set roles = false")
        in_snapshot = sorted({u.db for u in units if u.kind != "roles"})
        unknown = sorted(set(tgt.databases) - set(in_snapshot))
        if unknown:
            raise PermanentError(f"snapshot {snap.id} holds no database {', '.join(unknown)} (it has {', '.join(in_snapshot)})")
        databases = []
        for db in tgt.databases or in_snapshot:
            dst = tgt.rename.get(db, db)
            names = [f"{u.db}.{u.pg['schema']}.{u.pg['table']}" for u in units if u.db == db and u.kind == "table"]
            chosen = select_tables(names, tgt.include, tgt.exclude)
            pairs = [(u.pg["schema"], u.pg["table"]) for u in units if u.db == db and u.kind == "table"]
            tables = [list(p) for p, n in zip(pairs, names, strict=True) if n in set(chosen)]
            databases.append({"source": db, "target": dst, "tables": tables, "left_out": self._left_out(units, db)})
        one_source_each([[db, tgt.rename.get(db, db)] for db in tgt.databases or in_snapshot])
        with self.server.connect(autocommit=True) as conn, self.server.errors("connecting"):
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        self.details = {"snapshot_id": snap.id, "databases": databases, "server_version": version}
        return self.details

    def _left_out(self, units: list[Unit], db: str) -> list[list[Any]]:
        """The snapshot's tables of `db` the target's include/exclude leave out: their schema
        entries are not restored either (with their catalog oids, see postgres/toc.py)."""
        tgt = self.spec.target
        if not tgt.include and not tgt.exclude:
            return []
        [schema] = [u for u in units if u.db == db and u.kind == "schema"]
        listed = schema.pg.get("tables")
        if listed is None:
            raise PermanentError(
                f"snapshot's schema of {db} predates table selection on restore: restore it whole (no include/exclude)"
            )
        chosen = set(select_tables([f"{db}.{s}.{t}" for s, t, *_ in listed], tgt.include, tgt.exclude))
        return [entry for entry in listed if f"{db}.{entry[0]}.{entry[1]}" not in chosen]

    def _units(self) -> dict[str, Unit]:
        snap = self.repo.resolve(self.details["snapshot_id"])
        return {u.path: u for u in read_tree(self.repo.tree_bytes(snap))}

    def run(self, ctx: RunContext) -> None:
        units = self._units()
        with self.repo.locked(exclusive=False):
            if self.spec.roles and not ctx.step_done(ROLES):
                ctx.step_started(ROLES)
                ctx.step_completed(ROLES, self._roles(ctx, units[ROLES_PATH]))
            for db in self.details["databases"]:
                self._database(ctx, db, units)

    def _database(self, ctx: RunContext, db: dict[str, Any], units: dict[str, Unit]) -> None:
        src, dst = db["source"], db["target"]
        schema = units[schema_path(src)]
        if not ctx.step_done(CREATE + dst):
            ctx.step_started(CREATE + dst)
            ctx.step_completed(CREATE + dst, self._create(ctx, dst))
        if not ctx.step_done(PRE + dst):
            ctx.step_started(PRE + dst)
            summary = self._pg_restore(ctx, schema, dst, "pre-data", db.get("left_out", []))
            if self.spec.target.if_exists == "merge":
                summary["foreign_keys_set_aside"] = self._set_aside_foreign_keys(ctx, dst, db["tables"])
            ctx.step_completed(PRE + dst, summary)
        tables = [
            (_table_step(dst, s, t), units[table_path(src, s, t)])
            for s, t in db["tables"]
            if not ctx.step_done(_table_step(dst, s, t))
        ]
        run_parallel([self._table_task(ctx, dst, name, unit) for name, unit in tables], self.spec.parallel)
        lo = units.get(lo_path(src))
        if not ctx.step_done(LO + dst):
            ctx.step_started(LO + dst)
            ctx.step_completed(LO + dst, self._large_objects(dst, lo) if lo is not None else {"rows": 0})
        if not ctx.step_done(POST + dst):
            ctx.step_started(POST + dst)
            summary = self._pg_restore(ctx, schema, dst, "post-data", db.get("left_out", []))
            summary.update(self._sequences_and_matviews(dst, schema, db.get("left_out", [])))
            summary["foreign_keys_restored"] = self._restore_foreign_keys(ctx, dst)
            if self.spec.roles:
                with self.server.connect(autocommit=True) as conn, self.server.errors(f"granting on database {dst}"):
                    apply_database_acl(conn, dst, schema.pg.get("database", {}))
            ctx.step_completed(POST + dst, summary)

    # --- create ---------------------------------------------------------------------------------

    def _create(self, ctx: RunContext, dst: str) -> dict[str, Any]:
        mode = self.spec.target.if_exists
        ours = bool((ctx.cursor(CREATE + dst) or {}).get("creating"))
        with self.server.connect(autocommit=True) as conn, self.server.errors(f"creating database {dst}"):
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dst,)).fetchone() is not None
            if exists and mode == "merge" and not ours:
                return {"database": dst, "created": False}
            if exists and mode == "fail" and not ours:
                raise PermanentError(
                    f"database {dst} exists on {self.server.where}: if_exists = 'fail' (use 'drop' or 'merge', or rename)"
                )
            ctx.checkpoint(CREATE + dst, {"creating": True})
            if exists:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dst)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dst)))
        return {"database": dst, "created": True, "dropped": exists}

    # --- schema ---------------------------------------------------------------------------------

    def _chunks(self, unit: Unit) -> Iterator[bytes]:
        ids = [bytes.fromhex(c) for c in unit.chunks]
        with ThreadPoolExecutor(1, thread_name_prefix="davit-pg-read") as pool:
            yield from calls_ahead(pool, self.repo.read_chunk, ids, depth=2)

    def _feed(self, argv: list[str], schema: Unit | bytes, out: Any, doing: str) -> None:
        """Run a PostgreSQL tool with the schema archive (its chunks, or the archive rewritten
        whole) on its stdin, its stdout to `out`."""
        with self.server.passfile_env() as env, tempfile.TemporaryFile() as errfile:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=errfile, env=env)
            assert proc.stdin is not None
            try:
                for chunk in [schema] if isinstance(schema, bytes) else self._chunks(schema):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass  # the tool ended early: its exit status and stderr say why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            finish_tool(self.server, proc, errfile, argv, doing)

    def _pg_restore(self, ctx: RunContext, schema: Unit, dst: str, section: str, left_out: list[list[Any]]) -> dict[str, Any]:
        merge = self.spec.target.if_exists == "merge"
        argv = [tool("pg_restore"), *self.server.tool_args(dst), f"--section={section}"]
        argv += [] if self.spec.roles else ["--no-owner"]  # owners exist when the roles were restored
        argv += ["--no-privileges"] if self.spec.privileges == "skip" else []  # no GRANT naming a missing role
        argv += [] if merge else ["--single-transaction", "--exit-on-error"]
        source: Unit | bytes = schema
        if self.spec.privileges == "skip" and section == "post-data":
            source = self._fit_policies(ctx, schema, dst)
        with tempfile.TemporaryDirectory(prefix="davit-pg-list-") as private:
            dropped = 0
            if left_out:
                # the archive's table of contents without the left-out tables' entries
                with tempfile.TemporaryFile() as listing:
                    self._feed([tool("pg_restore"), "--list"], source, listing, f"listing the schema of {dst}")
                    listing.seek(0)
                    kept, dropped = toc.leave_out(listing.read().decode(), left_out)
                path = f"{private}/toc.list"
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w") as fh:
                    fh.write(kept)
                argv += ["--use-list", path]
            try:
                self._feed(argv, source, subprocess.DEVNULL, f"restoring the {section} of {dst}")
            except PostgresRefused as exc:
                if not merge:
                    raise
                ctx.warn(f"{dst}: {section}: objects that exist were kept: {str(exc)[-500:]}")
        return {"section": section, "left_out_entries": dropped}

    def _fit_policies(self, ctx: RunContext, schema: Unit, dst: str) -> Unit | bytes:
        """The schema archive with its row-level security policies fitted to the roles the
        target has (see postgres/policies.py), or the unit itself when none names a missing role."""
        with self.server.connect(autocommit=True) as conn, self.server.errors("reading the target's roles"):
            existing = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
        archive = read_archive(b"".join(self._chunks(schema)), f"schema archive of {schema.db}")
        fitted, changes = fit_policies(archive, existing)
        if not changes:
            return schema
        ctx.warn(
            f"{dst}: privileges = 'skip': policies naming roles {self.server.where} lacks: "
            + "; ".join(c.describe() for c in changes)
        )
        return custom_schema_archive(fitted)

    # --- roles ---------------------------------------------------------------------------------

    def _roles(self, ctx: RunContext, unit: Unit) -> dict[str, Any]:
        found = json.loads(b"".join(self._chunks(unit)))
        if not found.get("passwords"):
            ctx.warn("the snapshot's roles were read without their passwords (the backup's user is not a superuser)")
        with self.server.connect() as conn, self.server.errors("creating the roles"):
            done = apply_roles(conn, found, self.spec.replace_role_passwords)
            conn.commit()
        kept = [r for r in done["kept"] if r not in done["passwords_replaced"]]
        if kept:
            ctx.warn(f"roles that exist on {self.server.where} were kept as they are (password unchanged): {', '.join(kept)}")
        return {k: (len(v) if isinstance(v, list) else v) for k, v in done.items()}

    # --- merge: the target's foreign keys --------------------------------------------------------

    def _set_aside_foreign_keys(self, ctx: RunContext, dst: str, tables: list[list[str]]) -> int:
        """Merging into a database that has foreign keys on or to the tables about to be loaded:
        TRUNCATE refuses a referenced table and a COPY's rows may point at rows loaded later. The
        keys are recorded (in the step's checkpoint, merged with an earlier attempt's: a kill
        after the DROP loses none), dropped, and added back after post-data."""
        names = [sql.Identifier(s, t) for s, t in tables]
        with self.server.connect(dst) as conn, self.server.errors(f"setting aside the foreign keys of {dst}"):
            found = [list(r) for r in conn.execute(FOREIGN_KEYS, ([n.as_string(conn) for n in names],)).fetchall()]
            earlier = (ctx.cursor(PRE + dst) or {}).get("foreign_keys", [])
            keys = earlier + [k for k in found if k not in earlier]
            conn.rollback()
            ctx.checkpoint(PRE + dst, {"foreign_keys": keys})
            for s, t, name, _definition in found:
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(s, t), sql.Identifier(name)))
            conn.commit()
        return len(keys)

    def _restore_foreign_keys(self, ctx: RunContext, dst: str) -> int:
        keys = (ctx.cursor(PRE + dst) or {}).get("foreign_keys", [])
        added = 0
        with self.server.connect(dst, autocommit=True) as conn:
            for s, t, name, definition in keys:
                exists = conn.execute(
                    "SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass(%s)",
                    (name, sql.Identifier(s, t).as_string(conn)),
                ).fetchone()
                if exists:
                    continue  # the snapshot's post-data brought it back
                query = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(sql.Identifier(s, t), sql.Identifier(name))
                try:
                    with self.server.errors(f"adding back foreign key {name} of {dst}.{s}.{t}"):
                        conn.execute(query + sql.SQL(definition))
                    added += 1
                except PostgresRefused as exc:
                    ctx.warn(f"{dst}: the target's foreign key {name} on {s}.{t} no longer holds after the merge: {exc}")
        return added

    # --- tables ---------------------------------------------------------------------------------

    def _table_task(self, ctx: RunContext, dst: str, step: str, unit: Unit) -> Any:
        def task(relay: Relay) -> None:
            relay.call(ctx.step_started, step)
            rows = unit.pg.get("rows")  # the snapshot's own count: exact
            if isinstance(rows, int):
                relay.call(ctx.step_total, step, items_total=rows)
            summary = self._table(dst, step.removeprefix(TABLE), unit)
            # The table's rows are committed: one checkpoint says how many, so the step's
            # progress (and the run's rows done) shows them, as mysql.restore's does. The
            # cursor is not read on resume: a step not recorded done is loaded again whole.
            relay.call(ctx.checkpoint, step, {"done": True}, bytes_done=unit.size, items_done=summary["rows"])
            relay.call(ctx.step_completed, step, summary)

        return task

    def _table(self, dst: str, name: str, unit: Unit) -> dict[str, Any]:
        table = sql.Identifier(unit.pg["schema"], unit.pg["table"])
        columns = sql.SQL(", ").join(map(sql.Identifier, unit.pg["columns"]))
        with self.server.connect(dst) as conn, self.server.errors(f"loading table {name}"):
            # one transaction: the TRUNCATE and the rows commit together or not at all
            conn.execute(sql.SQL("TRUNCATE ONLY {}").format(table))
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)) as copy:
                for chunk in self._chunks(unit):
                    copy.write(chunk)
            conn.commit()
        return {"table": name, "rows": unit.pg.get("rows", 0), "bytes": unit.size}

    def _large_objects(self, dst: str, unit: Unit) -> dict[str, Any]:
        """The large objects with their oids, written in pieces as the snapshot's chunks arrive
        (never whole in memory), all in one transaction; one that exists is replaced."""
        stream = _Exact(self._chunks(unit))
        count = 0
        with self.server.connect(dst) as conn, self.server.errors(f"loading the large objects of {dst}"):
            while header := stream.read(LO_HEADER.size):
                oid, size = LO_HEADER.unpack(header)
                conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = %s", (oid,))
                conn.execute("SELECT lo_create(%s)", (oid,))
                for offset in range(0, size, LO_PIECE):
                    conn.execute("SELECT lo_put(%s, %s, %s)", (oid, offset, stream.read(min(LO_PIECE, size - offset))))
                count += 1
            conn.commit()
        return {"rows": count}

    def _sequences_and_matviews(self, dst: str, schema: Unit, left_out: list[list[Any]]) -> dict[str, Any]:
        sequences = _sequences(schema, left_out)
        matviews = schema.pg.get("matviews", [])
        with self.server.connect(dst) as conn, self.server.errors(f"setting the sequences of {dst}"):
            for s, name, value, called in sequences:
                conn.execute(SETVAL, (value, called, s, name))
            views = [sql.Identifier(s, name) for s, name in matviews]
            # a view read from a left-out table was left out with it
            _refresh_in_dependency_order(conn, [v for v in views if conn.execute(EXISTS, (v.as_string(conn),)).fetchone()[0]])  # type: ignore[index]
            conn.commit()
        return {"sequences": len(sequences), "matviews": len(matviews)}

    # --- verification ---------------------------------------------------------------------------

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        units = self._units()
        problems, rows = [], 0
        for db in self.details["databases"]:
            src, dst = db["source"], db["target"]
            with self.server.connect(dst, autocommit=True) as conn, self.server.errors(f"verifying {dst}"):
                for s, t in db["tables"]:
                    name = f"{dst}.{s}.{t}"
                    unit = units[table_path(src, s, t)]
                    query = sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(s, t))
                    found = conn.execute(query).fetchone()[0]  # type: ignore[index]
                    rows += int(found)
                    if found != unit.pg.get("rows", 0):
                        problems.append(f"{name}: {found} rows, the snapshot has {unit.pg.get('rows', 0)}")
                for s, name, value, called in _sequences(units[schema_path(src)], db.get("left_out", [])):
                    query = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(s, name))
                    got = conn.execute(query).fetchone()
                    if got != (value, called):
                        problems.append(f"{dst}.{s}.{name}: sequence at {got}, the snapshot has {(value, called)}")
        if problems:
            raise PermanentError(f"the restored databases differ from the snapshot: {'; '.join(problems[:5])}")
        return {"snapshot_id": self.details["snapshot_id"], "databases": len(self.details["databases"]), "rows": rows}


class _Exact:
    """Exactly `n` bytes at a time from an iterator of blocks (the snapshot's chunks)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._held = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._held) < n:
            block = next(self._blocks, b"")
            if not block:
                if self._held:
                    raise PermanentError("the snapshot's large objects end in the middle of one")
                return b""
            self._held += block
        out = bytes(self._held[:n])
        del self._held[:n]
        return out


def _refresh_in_dependency_order(conn: psycopg.Connection[Any], views: list[sql.Identifier]) -> None:
    """REFRESH each materialized view after the ones it reads: the snapshot lists them by name,
    and one that reads another not yet populated fails (55000). Each attempt runs in a
    savepoint; the views that failed are tried again while a round populates one more."""
    left = views
    while left:
        failed: list[sql.Identifier] = []
        last: psycopg.Error | None = None
        for view in left:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(view))
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                failed.append(view)
                last = exc
        if len(failed) == len(left) and last is not None:
            raise last
        left = failed


def _sequences(schema: Unit, left_out: list[list[Any]]) -> list[list[Any]]:
    """The snapshot's sequence values but those owned by a left-out table."""
    gone = {(str(t[0]), str(seq)) for t in left_out for seq in t[3]}
    return [q for q in schema.pg.get("sequences", []) if (q[0], q[1]) not in gone]


def _table_step(dst: str, schema: str, table: str) -> str:
    return f"{TABLE}{dst}.{qualified(schema, table)}"

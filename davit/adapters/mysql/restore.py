"""mysql.restore: a mysql.backup snapshot into a server, under the same or other database names.

`prepare` resolves the snapshot, selects its tables (`include`/`exclude`, named as in the
snapshot), maps each database through `rename`, and applies `if_exists` to the target
databases that exist: `fail` stops the run here naming them. The plan: `schema:DB` per
target database (`drop`: the database is dropped and created again; otherwise created if
missing; then each selected table is dropped and created from its definition, `merge`: created only if
missing; a resumed step does the same again), `users` when `users = true` (roles, users with
their password hashes, grants: after the tables, which a grant may name; grants on a renamed
database follow it), one `data:DB.TABLE` per table, then
`objects:DB` (views, functions, procedures, triggers, events: after the data, so no trigger
fires while rows load).

A table's rows load on one connection, which the step's cursor names before the first row is
sent (`rollbackwait`: a resumed load waits for that connection's rollback to end instead of
failing on its row locks). A table that is empty when its load begins (every fresh restore)
loads one committed transaction per chunk, as `mariadb` replays a dump (the cursor says
`batched` before the first commit). A table that holds rows when its load begins (a resumed
load finding an interrupted batched load's rows, or rows of its own: merge, data_only), a
system-versioned table and a sequence load in ONE transaction: `DELETE FROM` the table if it
holds rows (not TRUNCATE, which commits by itself in MariaDB), every chunk's INSERT in order
(each chunk read and verified before a byte of it is sent), then COMMIT; a kill -9 before the
COMMIT leaves the table as it was before the step (the server rolls the transaction back when
the connection drops), and the resumed step deletes and loads again. Only tables of a
transactional engine (InnoDB) have that guarantee: a MyISAM/Aria table half loaded at a kill
is emptied by the resumed step and loaded again, which also never doubles rows but is visible
meanwhile. The row count is taken after the last commit, under the table's load lock.

Verification (`finish`): each table's count, taken in its loading transaction, equals the
rows the snapshot holds for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from davit.adapters.mysql import loadlock, pieces, rollbackwait, schema
from davit.adapters.mysql.client import SQL_MODE, Server, quote_name, quote_text
from davit.adapters.mysql.definer import without_definer
from davit.adapters.mysql.layout import KIND, USERS_PATH, DatabaseEntry, Entry, TableEntry, UsersEntry, qualified, read_tree
from davit.adapters.parallel import Relay, run_parallel
from davit.adapters.prefetch import calls_ahead
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.sqlrename import one_source_each
from davit.domain.errors import PermanentError
from davit.domain.jobs import MysqlRestoreJob
from davit.domain.jobs.mysql import SYSTEM_DATABASES, MysqlRestoreTarget
from davit.domain.namespaces import select
from davit.domain.ports import RunContext

log = logging.getLogger("davit.mysql")
SCHEMA, DATA, OBJECTS, USERS = "schema:", "data:", "objects:", "users"
BATCHED = "batched"  # a data step's cursor: its load commits chunk by chunk (`_load`)


class MysqlRestoreWork(RunWork[MysqlRestoreJob]):
    def __init__(self, inputs: RunInputs[MysqlRestoreJob]) -> None:
        super().__init__(inputs)
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = Server(self.spec.target, f"mysql.restore {self.spec.name}")
        return self._server

    @property
    def databases(self) -> list[list[str]]:
        """[source db, target db] pairs."""
        return [list(p) for p in self.details.get("databases", [])]

    @property
    def tables(self) -> list[list[str]]:
        """[source db, table, target db] of each selected table."""
        return [list(t) for t in self.details.get("tables", [])]

    def plan(self) -> list[str]:
        return (
            [SCHEMA + dst for _, dst in self.databases]
            + ([USERS] if self.spec.target.users else [])
            + [DATA + qualified(dst, table) for _, table, dst in self.tables]
            + [OBJECTS + dst for _, dst in self.databases]
        )

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        tgt = self.spec.target
        snap = self.repo.resolve(self.spec.source.snapshot, self.spec.source.job)
        if snap.kind != KIND:
            raise PermanentError(f"snapshot {snap.id} is a {snap.kind} snapshot, not a MariaDB/MySQL one")
        entries = list(read_tree(self.repo.tree_bytes(snap)))
        if tgt.users and not any(isinstance(e, UsersEntry) for e in entries):
            raise PermanentError(f"users = true, but snapshot {snap.id} holds no accounts (its backup had users = false)")
        chosen, pairs = restore_selection(entries, tgt)
        own = sorted(dst for _, dst in pairs if dst.lower() in SYSTEM_DATABASES)
        if own:  # (drop would drop the server's accounts; merge would replace its grant tables)
            raise PermanentError(
                f"database {', '.join(own)} is the server's own: not restored into (rename it to restore its tables "
                "for a look; accounts are restored by users = true)"
            )
        unknown = sorted(set(tgt.rename) - {e.db for e in entries if isinstance(e, DatabaseEntry)})
        if unknown:
            raise PermanentError(f"rename names database(s) the snapshot {snap.id} does not hold: {', '.join(unknown)}")
        info = self.server.ping()
        existing = self._existing([dst for _, dst in pairs])
        if existing and tgt.if_exists == "fail":
            raise PermanentError(
                f"{self.server.what}: database(s) {', '.join(existing)} exist on {self.server.where} "
                "(if_exists = 'fail'; use 'drop' to replace them or 'merge' to load into them)"
            )
        self.details = {
            "snapshot_id": snap.id,
            "databases": pairs,
            "tables": [[e.db, e.table, tgt.rename.get(e.db, e.db)] for e in chosen],
            "existed": existing,
            **info,
        }
        return self.details

    def _existing(self, names: list[str]) -> list[str]:
        conn = self.server.connect()
        try:
            with self.server.errors("listing databases"), conn.cursor() as cur:
                cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
                present = {str(r[0]) for r in cur.fetchall()}
        finally:
            conn.close()
        return [n for n in names if n in present]

    def run(self, ctx: RunContext) -> None:
        entries = self._entries()
        for src, dst in self.databases:
            if not ctx.step_done(SCHEMA + dst):
                ctx.step_started(SCHEMA + dst)
                ctx.step_completed(SCHEMA + dst, self._schema(entries, src, dst))
        if self.spec.target.users and not ctx.step_done(USERS):  # after the tables: a grant may name one
            ctx.step_started(USERS)
            ctx.step_completed(USERS, self._users(entries[USERS_PATH]))
        todo = [t for t in self.tables if not ctx.step_done(DATA + qualified(t[2], t[1]))]
        with self.repo.locked(exclusive=False):
            run_parallel([self._data_task(ctx, entries[qualified(s, t)], d) for s, t, d in todo], self.spec.parallel)
        for src, dst in self.databases:
            if not ctx.step_done(OBJECTS + dst):
                ctx.step_started(OBJECTS + dst)
                ctx.step_completed(OBJECTS + dst, self._objects(entries, src, dst))

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        entries = self._entries()
        problems, rows = [], 0
        for src, table, dst in self.tables:
            entry = entries[qualified(src, table)]
            assert isinstance(entry, TableEntry)
            if not entry.data:
                continue
            found = (ctx.cursor(DATA + qualified(dst, table)) or {}).get("count")
            rows += entry.rows
            if found != entry.rows:
                problems.append(f"{dst}.{table}: {found} rows after loading, the snapshot holds {entry.rows}")
        if problems:
            raise PermanentError(f"restored tables differ from the snapshot: {'; '.join(problems[:5])}")
        return {
            "snapshot_id": self.details.get("snapshot_id"),
            "databases": len(self.databases),
            "tables": len(self.tables),
            "rows": rows,
        }

    def _entries(self) -> dict[str, Any]:
        snap = self.repo.resolve(self.details["snapshot_id"])
        out: dict[str, Any] = {}
        for e in read_tree(self.repo.tree_bytes(snap)):
            if isinstance(e, TableEntry):
                out[e.key] = e
            elif isinstance(e, DatabaseEntry):
                out[e.db] = e
            else:
                out[USERS_PATH] = e
        return out

    def _users(self, users: UsersEntry) -> dict[str, Any]:
        """Roles and users first (an existing account keeps its password), then their grants, with
        the grants on a renamed database moved to its new name."""
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                for statement in users.statements:
                    with self.server.errors("restoring accounts and grants"):
                        cur.execute(_renamed_grant(statement, dict(self.databases)))
        finally:
            conn.close()
        return {"statements": len(users.statements)}

    # --- schema --------------------------------------------------------------------------------

    def _schema(self, entries: dict[str, Any], src: str, dst: str) -> dict[str, Any]:
        db: DatabaseEntry | None = entries.get(src)
        how = self.spec.target.if_exists
        conn = self.server.connect()
        created = 0
        try:
            with self.server.errors(f"creating database {dst} and its tables"), conn.cursor() as cur:
                if how == "drop":
                    cur.execute(f"DROP DATABASE IF EXISTS {quote_name(dst)}")
                create = db.create if db is not None else f"CREATE DATABASE {quote_name(src)}"
                cur.execute(create_database_as(create, src, dst))
                cur.execute(f"USE {quote_name(dst)}")
                for s, table, d in self.tables:
                    entry = entries[qualified(s, table)]
                    if d != dst or entry.create is None:
                        continue
                    if how == "merge":
                        cur.execute(_if_not_exists(entry.create))
                    else:
                        cur.execute(f"DROP TABLE IF EXISTS {quote_name(table)}")
                        cur.execute(entry.create)
                    created += 1
        finally:
            conn.close()
        return {"database": dst, "tables": created}

    # --- data ----------------------------------------------------------------------------------

    def _data_task(self, ctx: RunContext, entry: TableEntry, dst: str) -> Any:
        def task(relay: Relay) -> None:
            step = DATA + qualified(dst, entry.table)
            relay.call(ctx.step_started, step)
            summary = self._load(ctx, relay, entry, dst)
            relay.call(ctx.step_completed, step, summary)

        return task

    def _load(self, ctx: RunContext, relay: Relay, entry: TableEntry, dst: str) -> dict[str, Any]:
        step = DATA + qualified(dst, entry.table)
        name = f"{dst}.{entry.table}"
        if not entry.data:
            relay.call(ctx.checkpoint, step, {"count": None, "schema_only": True})
            return {"table": name, "rows": 0, "schema_only": True}
        relay.call(ctx.step_total, step, items_total=entry.rows)  # the snapshot's own count: exact
        conn = self.server.connect(autocommit=False)
        try:
            with self.server.errors(f"loading {name}"), conn.cursor() as cur:
                # an interrupted load's transaction holds the rows until its rollback ends:
                # wait for its connection (rollbackwait), then name this one before any row (below)
                before = relay.call(ctx.cursor, step) or {}
                rollbackwait.wait_gone(cur, before.get("loading"), ctx.check_stop, f"{self.server.what}: loading {name}")
                cur.execute(f"USE {quote_name(dst)}")
                # another load of this table (another run) holds it until its commit: then this
                # one sees its rows and empties the table (the check below takes no lock)
                loadlock.hold(cur, dst, entry.table, ctx.check_stop, f"{self.server.what}: loading {name}")
                versioned = _versioned(cur, dst, entry.table)
                if not versioned:  # (a versioned table's implicit row start and end are listed nowhere)
                    _columns_present(cur, dst, entry, name, self.server.where)
                # unique_checks on for the load: with unique_checks = 0 and foreign_key_checks = 0,
                # MariaDB 10.7+ takes a transaction's INSERTs into an empty table in its bulk mode
                # across statements, buffering every row of every index and sorting them at the
                # commit; on sysbench tables that cost mariadbd twice the CPU seconds and the load
                # twice the wall clock of plain row inserts (README, "MariaDB/MySQL"). Row inserts
                # log row undo: a killed load's rollback takes about as long as its inserts did
                # (`rollbackwait` waits for it). A duplicate key now fails the load naming the table.
                cur.execute("SET SESSION unique_checks = 1")
                sequence = schema.is_sequence(entry.create)
                held = not sequence and _has_rows(cur, entry.table)
                # Batched: a table that was empty when this restore's load of it began (every
                # fresh restore) loads one committed transaction per chunk, as `mariadb` replays
                # a dump (a commit per statement), instead of all its rows in one transaction,
                # whose row undo outgrew a 128 MB buffer pool and cost the server twice the CPU
                # (bench/README.md, s-maria4). A kill leaves some chunks committed (the cursor
                # says `batched` before the first one); the resumed load finds rows, so it
                # empties the table and loads it again in ONE transaction (DELETE, every chunk,
                # COMMIT), as a table that held rows of its own (merge, data_only) always loads:
                # never doubled, and a failure of that load leaves the table as it found it.
                batched = not versioned and not sequence and not held
                mark = {"count": None, "loading": rollbackwait.identity(cur), **({BATCHED: True} if batched else {})}
                relay.call(ctx.checkpoint, step, mark)  # (before any row: a resumed load reads it)
                cur.execute("START TRANSACTION")
                # a sequence cannot be emptied: its row insert sets its state. An empty table
                # (every fresh restore, and a resumed one once the killed load rolled back) is not
                # "emptied": there is nothing to delete (`loadlock` keeps that true to the commit)
                if held and not batched:
                    cur.execute(f"DELETE FROM {quote_name(entry.table)}")
                if versioned:  # the DELETE made the rows history: that goes too, and the snapshot's comes back
                    cur.execute(f"DELETE HISTORY FROM {quote_name(entry.table)}")
                    cur.execute("SET SESSION system_versioning_insert_history = 1")
                if entry.load_mode is not None:  # an imported script's rows: the mode they were written for
                    cur.execute(f"SET SESSION sql_mode = {quote_text(entry.load_mode)}")
                done = self._send(ctx, conn, cur, entry, name, batched)
                cur.execute(f"SELECT COUNT(*) FROM {quote_name(entry.table)}" + (" FOR SYSTEM_TIME ALL" if versioned else ""))
                count = int(cur.fetchone()[0])
                conn.commit()
        finally:
            conn.close()
        relay.call(ctx.checkpoint, step, {"count": count}, bytes_done=done, items_done=count)
        return {"table": name, "rows": count, "bytes": done}

    def _send(self, ctx: RunContext, conn: Any, cur: Any, entry: TableEntry, name: str, batched: bool) -> int:
        """Every chunk's statements in order (`batched`: a commit after each chunk); the bytes sent."""
        done = 0
        packet = _max_packet(cur)
        try:
            for chunk in self._chunks(entry):
                # a statement over the server's packet goes in pieces under it (`pieces.py`)
                for statement in pieces.split(chunk, packet, name):
                    cur.execute(statement)
                    if pieces.is_check(statement) and int(cur.fetchone()[0]):
                        raise pieces.too_large(name, packet)
                done += len(chunk)
                if batched:  # (a chunk's pieces, which share user variables, commit together)
                    conn.commit()
                ctx.check_stop()
        except Exception:
            if batched:  # a failed or stopped load leaves the table empty, as a rolled-back one did
                _emptied_after_failure(conn, cur, entry.table, name)
            raise
        return done

    def _chunks(self, entry: TableEntry) -> Iterator[bytes]:
        """The table's statements in order, each read and verified (`read_chunk`), one read ahead."""
        ids = [bytes.fromhex(c) for c in entry.chunks]
        with ThreadPoolExecutor(1, thread_name_prefix="davit-mysql-read") as pool:
            yield from calls_ahead(pool, self.repo.read_chunk, ids, depth=1)

    # --- objects -------------------------------------------------------------------------------

    def _objects(self, entries: dict[str, Any], src: str, dst: str) -> dict[str, Any]:
        db: DatabaseEntry | None = entries.get(src)
        if db is None:
            return {"database": dst, "objects": 0}
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                with self.server.errors(f"opening database {dst}"):
                    cur.execute(f"USE {quote_name(dst)}")
                views = [o for o in db.objects if o["type"] == "view"]
                self._views(cur, dst, views)
                for obj in db.objects:
                    if obj["type"] != "view":
                        self._create(cur, dst, obj)
        finally:
            conn.close()
        return {"database": dst, "objects": len(db.objects)}

    def _views(self, cur: Any, dst: str, views: list[dict[str, str]]) -> None:
        """Views in an order where each one's views exist first: retried while one more succeeds."""
        left = list(views)
        while left:
            failed: list[dict[str, str]] = []
            last: Exception | None = None
            for view in left:
                try:
                    self._create(cur, dst, view)
                except PermanentError as exc:
                    failed.append(view)
                    last = exc
            if len(failed) == len(left):
                raise PermanentError(f"view(s) {', '.join(v['name'] for v in failed)} of {dst} cannot be created: {last}")
            left = failed

    def _create(self, cur: Any, dst: str, obj: dict[str, str]) -> None:
        """Create one object under the SQL mode and character set it was made with (replacing one of
        the same name: a resumed step, or `merge`)."""
        kind, name = obj["type"], obj["name"]
        with self.server.errors(f"creating {kind} {dst}.{name}"):
            cur.execute(
                f"SET SESSION character_set_client = {quote_text(obj['charset'])}, "
                f"collation_connection = {quote_text(obj['collation'])}"
            )
            if obj["sql_mode"] or kind != "view":
                cur.execute(f"SET SESSION sql_mode = {quote_text(obj['sql_mode'])}")
            drop = {"view": "VIEW", "procedure": "PROCEDURE", "function": "FUNCTION", "trigger": "TRIGGER", "event": "EVENT"}
            cur.execute(f"DROP {drop[kind]} IF EXISTS {quote_name(name)}")
            create = obj["create"] if self.spec.target.privileges == "keep" else without_definer(obj["create"])
            try:
                cur.execute(create)
            finally:
                cur.execute(
                    f"SET SESSION sql_mode = '{SQL_MODE}', character_set_client = 'utf8mb4', "
                    "collation_connection = 'utf8mb4_general_ci'"
                )


def _truncate(cur: Any, table: str) -> None:
    """Empty a table a failed batched load half filled, keeping its AUTO_INCREMENT counter
    (TRUNCATE resets it; the schema step had set it from the snapshot's definition, and the
    loaded ids, all below it, never moved it). TRUNCATE commits by itself."""
    cur.execute(
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME = {quote_text(table)}"
    )
    row = cur.fetchone()
    cur.execute(f"TRUNCATE TABLE {quote_name(table)}")
    if row is not None and row[0] is not None:
        cur.execute(f"ALTER TABLE {quote_name(table)} AUTO_INCREMENT = {int(row[0])}")


def _emptied_after_failure(conn: Any, cur: Any, table: str, name: str) -> None:
    """Best effort: a batched load that failed (a value the target refuses, a cancel) takes its
    committed chunks back out. When that fails too (the server gone) the rows stay until the
    resumed or next load, which finds them and replaces them in one transaction."""
    try:
        conn.rollback()
        _truncate(cur, table)
    except Exception as exc:  # (the load's own error is the one to raise)
        # (the exception's type only: a server's message is the caller's to redact)
        log.warning(
            "%s: the failed load's rows could not be taken out (%s); the next load empties the table", name, type(exc).__name__
        )


def _has_rows(cur: Any, table: str) -> bool:
    """Does the table hold a row (current rows only: history goes with `DELETE HISTORY`)?"""
    cur.execute(f"SELECT 1 FROM {quote_name(table)} LIMIT 1")
    return cur.fetchone() is not None


def _versioned(cur: Any, db: str, table: str) -> bool:
    """Is the target's table system-versioned? Its rows load with their row start and end when
    the snapshot has them (`system_versioning_insert_history`, MariaDB 10.11), and its count
    takes every version, as the backup's did."""
    cur.execute(
        "SELECT TABLE_TYPE FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = {quote_text(db)} AND TABLE_NAME = {quote_text(table)}"
    )
    row = cur.fetchone()
    return row is not None and str(row[0]) == "SYSTEM VERSIONED"


class TableMismatch(PermanentError):
    """The target's table cannot take the snapshot's rows as they are (a data_only load into a
    table defined otherwise)."""


def _columns_present(cur: Any, db: str, entry: TableEntry, name: str, where: str) -> None:
    """Refuse, before any row, a target table lacking a column the snapshot's rows fill: above all
    a system-versioned table's history (every version, with its row start and end) loaded into a
    table without versioning (a `data_only` restore into an existing table), where the rows
    would otherwise fail on a column the server names, or on a key the versions share. A table
    that does not exist is left to the server's own error, which names it."""
    cur.execute(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = {quote_text(db)} AND TABLE_NAME = {quote_text(entry.table)}"
    )
    present = {str(r[0]).lower() for r in cur.fetchall()}
    missing = [c for c in entry.columns if c.lower() not in present]
    if not present or not missing:
        return
    if entry.history and {c.lower() for c in entry.history} & {c.lower() for c in missing}:
        start, end = entry.history
        raise TableMismatch(
            f"{name}: the snapshot holds every version of the rows of a system-versioned table (each with its row start "
            f"and end, columns {start} and {end}), and {name} on {where} is not system-versioned: restore the table with "
            f"its definition (not data_only), or make {name} system-versioned with row start {start} and row end {end} "
            "first (ALTER TABLE ... ADD SYSTEM VERSIONING)"
        )
    raise TableMismatch(f"{name}: the snapshot's rows fill column(s) {', '.join(missing)}, which {name} on {where} lacks")


def _max_packet(cur: Any) -> int:
    cur.execute("SELECT @@max_allowed_packet")
    return int(cur.fetchone()[0])


def restore_selection(entries: list[Entry], tgt: MysqlRestoreTarget) -> tuple[list[TableEntry], list[list[str]]]:
    """The snapshot's tables a restore loads (by the target's include and exclude) and its
    databases as [snapshot name, target name] pairs (through `rename`): what `prepare` acts on,
    and what `davit check` looks for on the target."""
    found = sorted((e for e in entries if isinstance(e, TableEntry)), key=lambda e: (e.name, e.db))
    selected = set(select([e.name for e in found], tgt.include, tgt.exclude))
    chosen = [e for e in found if e.name in selected]  # (two tables may read alike: layout.qualified)
    dbs = sorted({e.db for e in chosen} | {e.db for e in entries if isinstance(e, DatabaseEntry) and _wanted(e.db, tgt.include)})
    pairs = [[db, tgt.rename.get(db, db)] for db in dbs]
    one_source_each(pairs)
    return chosen, pairs


def _wanted(db: str, include: list[str]) -> bool:
    """A database whose objects a restore creates: every database, or those an include pattern names."""
    return not include or any(p.split(".", 1)[0] in (db, "*") for p in include)


def create_database_as(create: str, src: str, dst: str) -> str:
    """`CREATE DATABASE `src` ...` as `CREATE DATABASE IF NOT EXISTS `dst` ...`."""
    head = "CREATE DATABASE "
    body = create[len(head) :] if create.startswith(head) else ""
    body = body.removeprefix("/*!32312 IF NOT EXISTS*/ ").removeprefix("IF NOT EXISTS ")
    rest = body[len(quote_name(src)) :] if body.startswith(quote_name(src)) else ""
    return f"CREATE DATABASE IF NOT EXISTS {quote_name(dst)}{rest}"


def _if_not_exists(create: str) -> str:
    for head in ("CREATE TABLE ", "CREATE OR REPLACE TABLE "):
        if create.startswith(head):
            return "CREATE TABLE IF NOT EXISTS " + create[len(head) :]
    return create


def _renamed_grant(statement: str, renames: dict[str, str]) -> str:
    """A GRANT on `src`.* or `src`.`t` as one on the database it is restored into."""
    if not statement.startswith("GRANT "):
        return statement
    for src, dst in renames.items():
        if src != dst:
            statement = statement.replace(f" ON {quote_name(src)}.", f" ON {quote_name(dst)}.")
    return statement

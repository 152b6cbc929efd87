"""mysql.backup: databases and tables of a MariaDB/MySQL server into a snapshot, table by table.

`prepare` logs in (a refused login fails the run at once), lists the tables to keep after
`databases`/`include`/`exclude` and `schema_only`/`data_only`, and warns of tables whose
engine is not transactional (MyISAM, Aria...: no snapshot covers them, they are read as they
are at that moment). The plan has one step `dump:DB.TABLE` per table, `objects` (views,
routines, triggers and events of each database; with `users = true` also the roles and users,
their password hashes and grants: `schema.accounts`), then `publish` and `retention`.

`run` opens the connections (`snapshot.py`: one consistent point for every table it reads)
and dumps the tables in parallel. A table is read in primary-key order through an unbuffered
cursor (`SSCursor`: rows stream, nothing is staged whole; through the C driver mysqlclient
when installed, `cdriver.py`), turned into INSERT statements cut
by content (`sqltext.py`), each statement a chunk stored as it comes; its definition is read
on the same connection. A table is one step: after a kill -9 the run resumes at the first
table not recorded done and dumps it again from its first row, through new connections that
start a new consistent point. Progress: each table's step is told the server's estimate of
its rows (`information_schema.TABLES.TABLE_ROWS`), and every checkpoint carries the rows read
so far. A resumed backup is therefore consistent per table and across
the tables dumped after the resume, not across the interruption (the README says so).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from davit.adapters.mysql import cdriver, literals, pieces, schema
from davit.adapters.mysql.client import Server, quote_name
from davit.adapters.mysql.layout import KIND, DatabaseEntry, TableEntry, UsersEntry, qualified, read_tree, tree_zst
from davit.adapters.mysql.snapshot import ConsistentConnections
from davit.adapters.mysql.sqltext import insert_head, statements
from davit.adapters.parallel import Relay, run_parallel
from davit.adapters.prefetch import in_background
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.staging import Staging
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, publish_then_retention, run_steps, step_names
from davit.domain.errors import SourceMissing
from davit.domain.jobs import MysqlBackupJob
from davit.domain.jobs.mysql import SYSTEM_DATABASES
from davit.domain.namespaces import Matcher, select
from davit.domain.ports import RunContext

DUMP, OBJECTS = "dump:", "objects"
TABLE_META, OBJECTS_META = "table.json", "objects.json"
FETCH_ROWS = 1000
READ_AHEAD = 4  # statements read ahead of the one being stored (each about chunk_kib / 4)


class MysqlBackupWork(RunWork[MysqlBackupJob]):
    def __init__(self, inputs: RunInputs[MysqlBackupJob]) -> None:
        super().__init__(inputs)
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = Server(self.spec.source, f"mysql.backup {self.spec.name}")
        return self._server

    @property
    def tables(self) -> list[list[str]]:
        """[db, table, engine, what] with what = "both", "schema" or "data"."""
        return [list(t) for t in self.details.get("tables", [])]

    def plan(self) -> list[str]:
        return [DUMP + qualified(db, table) for db, table, _, _ in self.tables] + [OBJECTS] + step_names(self._last_steps())

    def _last_steps(self) -> list[Step]:
        return publish_then_retention(self, self._publish)

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        info = self.server.ping()
        dbs, chosen, skipped = self._select()
        if not chosen:
            ctx.warn("no table to back up matches the job's databases/include/exclude")
        loose = [
            f"{db}.{t} ({engine})" for db, t, engine, what in chosen if what != "schema" and engine not in schema.TRANSACTIONAL
        ]
        if loose:
            ctx.warn(
                f"{len(loose)} table(s) of a non-transactional engine are read as they are when their turn comes, "
                f"outside the consistent snapshot: {', '.join(loose[:20])}"
            )
        for reason in skipped:
            ctx.warn(f"skipped {reason}")
        self.details = {
            "snapshot_id": self.run_id,
            "databases": dbs,
            "tables": chosen,
            "skipped": skipped,
            "driver": cdriver.name(),
            **info,
        }
        return self.details

    def _select(self) -> tuple[list[str], list[list[str]], list[str]]:
        src = self.spec.source
        conn = self.server.connect()
        try:
            with self.server.errors("listing databases and tables"), conn.cursor() as cur:
                present = schema.databases(cur)
                dbs = (
                    [d for d in src.databases if d in present]
                    if src.databases
                    else [d for d in present if d not in SYSTEM_DATABASES]
                )
                missing = [d for d in src.databases if d not in present]
                if missing:
                    raise SourceMissing(f"{self.server.where}", f"database(s) {', '.join(missing)} not found")
                # a list, not a dict by "db.table": two tables may read alike (layout.qualified)
                listed = sorted(
                    (f"{db}.{name}", db, name, kind, engine) for db in dbs for name, kind, engine in schema.tables(cur, db)
                )
        finally:
            conn.close()
        chosen, skipped = [], []
        schema_only, data_only = Matcher.of(src.schema_only), Matcher.of(src.data_only)
        selected = set(select([t[0] for t in listed], src.include, src.exclude))
        for full, db, name, kind, engine in listed:
            if full not in selected:
                continue
            if kind == "VIEW":
                continue  # kept with the database's objects
            if kind not in schema.TABLE_TYPES:
                skipped.append(f"{full}: a {kind.lower()} (not supported yet)")
                continue
            what = "schema" if schema_only.matches(full) else "data" if data_only.matches(full) else "both"
            chosen.append([db, name, engine, what])
        return dbs, chosen, skipped

    def run(self, ctx: RunContext) -> None:
        todo = [(i, t) for i, t in enumerate(self.tables) if not ctx.step_done(DUMP + qualified(t[0], t[1]))]
        with self.repo.locked(exclusive=False):
            if todo:
                pool = ConsistentConnections(self.server, min(self.spec.parallel, len(todo)))
                try:
                    pool.open()
                    if pool.warning:
                        ctx.warn(pool.warning)
                    run_parallel([self._dump_task(ctx, pool, i, t) for i, t in todo], self.spec.parallel)
                finally:
                    pool.close()
        run_steps(ctx, [Step(OBJECTS, self._objects), *self._last_steps()])

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        info = self.repo.resolve(self.run_id)
        missing = self.repo.missing_chunks(bytes.fromhex(c) for e in read_tree(self.repo.tree_bytes(info)) for c in _chunks(e))
        if missing:
            raise SourceMissing(info.where, f"{len(missing)} chunks it names are missing from the repository")
        return {"snapshot_id": self.run_id, **info.stats}

    # --- tables --------------------------------------------------------------------------------

    def _staging(self, index: int) -> Staging:
        return self.repo.staging(self.run_id, part=index)

    def _dump_task(self, ctx: RunContext, pool: ConsistentConnections, index: int, table: list[str]) -> Any:
        def task(relay: Relay) -> None:
            step = DUMP + qualified(table[0], table[1])
            relay.call(ctx.step_started, step)
            with pool.take() as conn:
                summary = self._dump(ctx, relay, conn, index, table)
            relay.call(ctx.step_completed, step, summary)

        return task

    def _dump(self, ctx: RunContext, relay: Relay, conn: Any, index: int, table: list[str]) -> dict[str, Any]:
        db, name, engine, what = table
        step = DUMP + qualified(db, name)
        staging = self._staging(index)
        with self.server.errors(f"reading the definition of {db}.{name}"), conn.cursor() as cur:
            cur.execute(f"USE {quote_name(db)}")
            create = schema.create_table(cur, name)
            period = schema.system_period(create)
            history = period is not None and period[2] == "timestamp"
            typed = schema.columns(cur, db, name) + _period_columns(period if history else None)
            entry = TableEntry(
                db=db,
                table=name,
                create=create if what != "data" else None,
                engine=engine,
                columns=[c[0] for c in typed],
                data=what != "schema",
                history=[period[0], period[1]] if history and period is not None else None,
            )
            order = schema.order_by(cur, db, name, entry.columns) if entry.data else []
            if history and period is not None and period[1] not in order:
                order.append(period[1])  # a row's versions share its key: they differ by their end
            estimate = schema.estimated_rows(cur, db, name) if entry.data else None
            cur.execute("SELECT @@max_allowed_packet")
            packet = int(cur.fetchone()[0])
        if estimate is not None:  # rides on the step's checkpoints, which carry the rows done
            relay.call(ctx.step_total, step, items_total=estimate)
        if period is not None and not history and entry.data:
            relay.call(
                ctx.warn,
                f"{db}.{name}: transaction-precise system versioning: only the current rows are kept, not the "
                "history (its versions are stamped with this server's transaction ids, which no other server has)",
                step,
            )
        oversized = 0  # the largest value of a statement over the packet (`pieces.largest_value`)
        writer = ChunkWriter(self.repo, self.tuning)
        # A table resumed after a kill starts again from its first row (a new snapshot point):
        # the staged list restarts empty.
        with staging.reopen_tree(0) as listing:

            def seal(final: bool) -> int:
                written = writer.seal()
                length = staging.durable(listing)
                cursor = {"list_bytes": length, "rows": entry.rows, "bytes": entry.size, "bytes_stored": writer.bytes_stored}
                if not final:
                    cursor["partial"] = True
                relay.call(
                    ctx.checkpoint,
                    step,
                    cursor,
                    chunks_written=written,
                    bytes_done=entry.size,
                    bytes_stored=writer.bytes_stored,
                    items_done=entry.rows,
                )
                return length

            try:
                if entry.data and entry.columns:
                    # The rows are fetched, written as literals and cut into statements on a
                    # thread of their own, a few statements ahead, while this one hashes,
                    # compresses and stores the ones before (SHA-256 and zstd run without the
                    # GIL): fetching and compressing overlap. Order is kept; the reader's error
                    # comes here after the statements before it; leaving the loop stops the
                    # reader, then closes its cursor here, before the connection goes back.
                    cut = statements(
                        insert_head(name, entry.columns),
                        self._batches(conn, name, typed, order, history),
                        self.spec.chunk_kib << 10,
                    )
                    ahead = in_background(cut, READ_AHEAD, "davit-mysql-read")
                    # (closed in reverse: the reader thread ends before its cursor closes)
                    with self.server.errors(f"reading {db}.{name}"), closing(cut), closing(ahead):
                        for chunk, count in ahead:
                            listing.write(_chunk_line(f"{db}/{name}", writer.put(chunk, text=True)))
                            if len(chunk) >= packet:  # (rare: only then is a value looked for)
                                oversized = max(oversized, pieces.largest_value(chunk))
                            entry.rows += count
                            entry.size += len(chunk)
                            if writer.checkpoint_due():
                                seal(final=False)
                                ctx.check_stop()
                if oversized > packet:
                    # A row over the packet is restored in pieces (`pieces.py`), but no server
                    # builds a string over its packet: a value that large needs a target whose
                    # packet is larger. Said now, not found out at the restore.
                    relay.call(
                        ctx.warn,
                        f"{db}.{name}: a value of about {oversized} bytes, more than this server's max_allowed_packet "
                        f"({packet}): restoring it needs a server whose max_allowed_packet is at least {oversized}",
                        step,
                    )
                staging.write_meta(TABLE_META, json.dumps(entry.to_dict()).encode())
                seal(final=True)
            except BaseException:
                writer.abort()
                raise
        return {"table": f"{db}.{name}", "rows": entry.rows, "bytes": entry.size}

    @staticmethod
    def _batches(
        conn: Any, table: str, columns: list[tuple[str, str, bool]], order: list[str], history: bool = False
    ) -> Iterator[list[bytes]]:
        """The table's rows as `(...)` literals, a fetch at a time (`statements` cuts whole batches),
        built here from the server's plain values (`literals.py`; the server only reads and
        sends, as it does for mariadb-dump). `history`: every version of a system-versioned
        table's rows, with their row start and end (mariadb-dump's --dump-history)."""
        names, keys = (",".join(quote_name(c) for c in cols) for cols in ([c[0] for c in columns], order))
        c_driver = cdriver.is_c(conn)
        if c_driver:  # every value as the bytes the server sent (no converter: mysqlclient's fast path)
            text_results, conn.converter = conn.converter, {}
        cur = cdriver.stream_cursor(conn)
        try:
            versions = " FOR SYSTEM_TIME ALL" if history else ""
            cur.execute(f"SELECT {names} FROM {quote_name(table)}{versions}" + (f" ORDER BY {keys}" if keys else ""))
            make = literals.Rows([literals.kind(t, charset) for _, t, charset in columns], raw=c_driver)
            while batch := cur.fetchmany(FETCH_ROWS):
                yield make(batch)
        finally:
            cur.close()  # reads what is left of the result, so the connection can be used again
            if c_driver:
                conn.converter = text_results

    # --- objects and publish -------------------------------------------------------------------

    def _objects(self, ctx: RunContext) -> dict[str, Any]:
        entries = []
        conn = self.server.connect()
        try:
            with self.server.errors("reading the databases' views, routines, triggers and events"), conn.cursor() as cur:
                for db in self.details.get("databases", []):
                    entries.append(DatabaseEntry(db, schema.create_database(cur, db), schema.objects(cur, db)).to_dict())
        finally:
            conn.close()
        users = self._accounts() if self.spec.source.users else None
        staged = {"databases": entries, "users": users}
        self._staging(len(self.tables)).write_meta(OBJECTS_META, json.dumps(staged).encode())
        return {
            "databases": len(entries),
            "objects": sum(len(e["objects"]) for e in entries),
            "account_statements": len(users or []),
        }

    def _accounts(self) -> list[str]:
        conn = self.server.connect()
        try:
            with (
                self.server.errors("reading accounts and grants (users = true needs SELECT on mysql.user)"),
                conn.cursor() as cur,
            ):
                return schema.accounts(cur)
        finally:
            conn.close()

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        if self.repo.snapshot_exists(self.run_id):
            return {"snapshot_id": self.run_id, "already_published": True}
        tables, stored = [], 0
        for index, (db, name, _, _) in enumerate(self.tables):
            staging = self._staging(index)
            cursor = ctx.cursor(DUMP + qualified(db, name)) or {}
            entry = TableEntry.from_dict(json.loads(staging.read_meta(TABLE_META)))
            entry.chunks = staging.chunk_list(cursor.get("list_bytes", 0))
            stored += cursor.get("bytes_stored", 0)
            tables.append(entry)
        objects_staging = self._staging(len(self.tables))
        staged = json.loads(objects_staging.read_meta(OBJECTS_META))
        databases = [DatabaseEntry.from_dict(d) for d in staged["databases"]]
        users = [UsersEntry(staged["users"])] if staged.get("users") is not None else []
        stats = {
            "databases": len(databases),
            "tables": len(tables),
            "rows": sum(t.rows for t in tables),
            "bytes": sum(t.size for t in tables),
            "chunk_refs": sum(len(t.chunks) for t in tables),
            "bytes_stored": stored,
        }
        src = self.spec.source
        manifest = {
            "id": self.run_id,
            "job": self.spec.name,
            "kind": KIND,
            "run_id": self.run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "host": src.host,
                "port": src.port,
                "databases": list(src.databases),
                "include": list(src.include),
                "exclude": list(src.exclude),
                "server_version": self.details.get("server_version"),
            },
            "parent": None,
            "stats": stats,
        }
        self.repo.publish_snapshot(manifest, tree_zst([*databases, *tables, *users], self.tuning.compression_level))
        for index in range(len(self.tables) + 1):
            self._staging(index).remove()
        return {"snapshot_id": self.run_id, **stats}


def _period_columns(period: tuple[str, str, str] | None) -> list[tuple[str, str, bool]]:
    """A timestamp-versioned table's row start and end, read and restored with its other columns
    (information_schema lists them as generated, or not at all when implicit)."""
    return [] if period is None else [(period[0], "timestamp", False), (period[1], "timestamp", False)]


def _chunks(entry: Any) -> list[str]:
    return list(entry.chunks) if isinstance(entry, TableEntry) else []


def _chunk_line(path: str, cid: str) -> bytes:
    line = {"p": path, "t": "f", "m": 0o644, "mt": 0, "u": 0, "g": 0, "c": [cid]}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"

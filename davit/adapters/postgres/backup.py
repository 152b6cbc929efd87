"""postgres.backup: selected databases into a snapshot, one consistent point per database.

`prepare` connects (a refused login fails the run at once: permanent, naming user and
server) and fixes the units to dump: per database its schema, each selected table's rows and
its large objects. The plan is one step per unit (`schema:DB`, `table:DB.SCHEMA.TABLE`,
`lo:DB`), then `publish` and `retention`.

`run` takes the databases one after another. For each, a coordinator connection opens a
REPEATABLE READ READ ONLY transaction and exports its snapshot (`pg_export_snapshot()`), as
`pg_dump -j` does; it stays open while that database's units run on `parallel` workers, each
of which imports it (`SET TRANSACTION SNAPSHOT`) so every table is read at the same point.
The schema is `pg_dump --snapshot=ID --schema-only -Fc`; a table's rows are `COPY (columns)
TO STDOUT` in text form (what pg_dump writes, and what `pg_restore` would read back; read
through `psql` joined to the same snapshot, `copyout.py`), cut by the repository's chunker and
stored as they arrive: nothing is staged whole on disk.

Progress: a table's step is told its rows as the catalog estimates them (`pg_class.reltuples`,
read in the unit's snapshot: what the last VACUUM/ANALYZE counted, unknown if never), the
large objects' step their exact count; every checkpoint, partial ones too, carries the rows
and bytes read so far. Totals ride on those checkpoints: no event is added for them.

One checkpoint per unit: a unit interrupted by a kill -9 starts again (its chunks already in
packs are found again and not stored twice: same rows, same bytes, same chunks). The exported
snapshot dies with the coordinator, so a resumed run reads the remaining units at a *new*
point in time; each unit records the snapshot it was read in, and the manifest says per
database whether all its units share one (`consistent`), and the run warns when not.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from davit.adapters.parallel import Relay, run_parallel
from davit.adapters.postgres import copyout
from davit.adapters.postgres.client import Server, finish_tool, tool
from davit.adapters.postgres.layout import LO_HEADER, ROLES_PATH, Unit, lo_path, qualified, schema_path, table_path, tree_zst
from davit.adapters.postgres.roles import DATABASE_ACL, read_roles
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import publish_then_retention, run_steps, step_names
from davit.domain.errors import DavitError
from davit.domain.jobs import PostgresBackupJob
from davit.domain.jobs.postgres import matches, select_tables
from davit.domain.ports import RunContext

SCHEMA, TABLE, LO, ROLES = "schema:", "table:", "lo:", "roles"
READ_SIZE = 1 << 20
LO_PIECE = 1 << 20  # bytes of a large object read or written at once
INV_READ = 0x40000  # lo_open's read mode (libpq-fs.h)
UNIT_META = "unit.json"

LIST_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
COLUMNS = """
SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""
SEQUENCES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2
"""
# per table, the catalog entries pg_restore -l names by (catalog, oid) that go with it when the
# restore leaves the table out (see davit/adapters/postgres/toc.py), and its owned sequences
TABLE_OBJECTS = """
SELECT n.nspname, c.relname, array(
  SELECT DISTINCT x FROM unnest(ARRAY['1259:' || c.oid]
    || array(SELECT '1259:' || indexrelid FROM pg_index WHERE indrelid = c.oid)
    || array(SELECT '2606:' || oid FROM pg_constraint WHERE conrelid = c.oid OR confrelid = c.oid)
    || array(SELECT '2620:' || oid FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal)
    || array(SELECT '2604:' || oid FROM pg_attrdef WHERE adrelid = c.oid)
    || array(SELECT '2618:' || oid FROM pg_rewrite WHERE ev_class = c.oid)
    || array(SELECT '3256:' || oid FROM pg_policy WHERE polrelid = c.oid)
    || array(SELECT '1259:' || d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             WHERE d.classid = 'pg_class'::regclass AND d.refobjid = c.oid AND d.deptype IN ('a', 'i'))
    || array(SELECT '1259:' || r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = c.oid AND r.ev_class <> c.oid)
  ) x ORDER BY 1),
  array(SELECT s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        WHERE d.classid = 'pg_class'::regclass AND d.refobjid = c.oid AND d.deptype IN ('a', 'i') ORDER BY 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""
# the planner's row estimate of one table; negative (PostgreSQL 14+) when never vacuumed or analyzed
ESTIMATED_ROWS = "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)"
MATVIEWS = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND c.relispopulated ORDER BY 1, 2
"""


class PostgresBackupWork(RunWork[PostgresBackupJob]):
    def __init__(self, inputs: RunInputs[PostgresBackupJob]) -> None:
        super().__init__(inputs)
        self._server: Server | None = None

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = Server(self.spec.source, f"postgres.backup {self.spec.name}")
        return self._server

    @property
    def units(self) -> list[dict[str, Any]]:
        return list(self.details.get("units", []))

    def plan(self) -> list[str]:
        return [u["step"] for u in self.units] + step_names(publish_then_retention(self, self._publish))

    # --- selection -----------------------------------------------------------------------------

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        src = self.spec.source
        with self.server.connect(autocommit=True) as conn, self.server.errors("listing databases"):
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            listed = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")]
        missing = sorted(set(src.databases) - set(listed))
        if missing:
            ctx.warn(f"databases not found on {self.server.where}: {', '.join(missing)}")
        units: list[dict[str, Any]] = [{"step": ROLES, "kind": "roles", "db": ""}] if self.spec.roles else []
        for db in [d for d in (src.databases or listed) if d in listed]:
            units += self._units_of(db)
        if not units:
            ctx.warn("no database to back up matches the job's databases")
        self.details = {"snapshot_id": self.run_id, "units": units, "server_version": version, "server": self.server.where}
        return self.details

    def _units_of(self, db: str) -> list[dict[str, Any]]:
        src = self.spec.source
        with self.server.connect(db, autocommit=True) as conn, self.server.errors(f"listing the tables of {db}"):
            tables = [(s, t) for s, t in conn.execute(LIST_TABLES)]
        # (a list, not a dict by "db.schema.table": two tables may read alike, see layout.qualified)
        names = sorted((f"{db}.{s}.{t}", s, t) for s, t in tables)
        chosen = set(select_tables([n for n, _, _ in names], src.include, src.exclude))
        excluded = [(s, t) for n, s, t in names if n not in chosen]
        data_only = [(s, t) for n, s, t in names if n in chosen and matches(n, src.data_only)]
        units: list[dict[str, Any]] = [
            {"step": SCHEMA + db, "kind": "schema", "db": db, "leave_out": [list(t) for t in excluded + data_only]}
        ]
        for name, s, t in names:
            if name in chosen and not matches(name, src.schema_only):
                step = f"{TABLE}{db}.{qualified(s, t)}"
                units.append({"step": step, "kind": "table", "db": db, "schema": s, "table": t})
        units.append({"step": LO + db, "kind": "lo", "db": db})
        return units

    # --- run -----------------------------------------------------------------------------------

    def run(self, ctx: RunContext) -> None:
        by_db: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, unit in enumerate(self.units):
            if not ctx.step_done(unit["step"]):
                by_db.setdefault(unit["db"], []).append((index, unit))
        self.chunker = self.repo.chunker(self.tuning.chunk_size)
        with self.repo.locked(exclusive=False):
            cluster = by_db.pop("", [])  # the roles: the cluster's, read outside any database's snapshot
            run_parallel([self._task(ctx, i, u, "") for i, u in cluster], 1)
            for db, todo in by_db.items():
                with self.server.connect(db) as coordinator, self.server.errors(f"exporting a snapshot of {db}"):
                    coordinator.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    snapshot = str(coordinator.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
                    if len(todo) < sum(1 for u in self.units if u["db"] == db):
                        ctx.warn(
                            f"database {db}: this resumed run reads its remaining units at a new point in time "
                            "(the snapshot of the interrupted run ended with it)"
                        )
                    run_parallel([self._task(ctx, i, u, snapshot) for i, u in todo], self.spec.parallel)
                    coordinator.rollback()
        run_steps(ctx, publish_then_retention(self, self._publish))

    def _task(self, ctx: RunContext, index: int, unit: dict[str, Any], snapshot: str) -> Any:
        def task(relay: Relay) -> None:
            relay.call(ctx.step_started, unit["step"])
            summary = self._dump(ctx, relay, index, unit, snapshot)
            relay.call(ctx.step_completed, unit["step"], summary)

        return task

    def _dump(self, ctx: RunContext, relay: Relay, index: int, unit: dict[str, Any], snapshot: str) -> dict[str, Any]:
        staging = self.repo.staging(self.run_id, part=index)
        writer = ChunkWriter(self.repo, self.tuning)
        stats = {"bytes": 0, "stored": 0}
        tally = _Tally(ctx, relay, unit["step"])
        with staging.reopen_tree(0) as listing:  # a unit is redone whole: its earlier lines go

            def store(chunks: Iterator[bytes | memoryview]) -> None:
                for chunk in chunks:  # each put before the next is asked for (`Chunker.cut_into`)
                    cid = writer.put(chunk)
                    listing.write(b'{"c":["' + cid.encode() + b'"]}\n')
                    stats["bytes"] += len(chunk)
                    if writer.checkpoint_due():
                        # chunks made durable and listed for a concurrent prune; the unit's
                        # checkpoint (its completion) comes at its end
                        written = writer.seal()
                        staging.durable(listing)
                        relay.call(
                            ctx.checkpoint,
                            unit["step"],
                            {"partial": True},
                            chunks_written=written,
                            bytes_done=stats["bytes"],
                            items_done=tally.rows,
                        )
                        ctx.check_stop()

            try:
                pg = self._read_unit(unit, snapshot, store, tally)
                written = writer.seal()
            except BaseException:
                writer.abort()
                raise
            staging.durable(listing)
        pg.update(
            {k: v for k, v in unit.items() if k in ("kind", "db", "schema", "table")}, snapshot=snapshot, bytes=stats["bytes"]
        )
        if pg.get("skipped"):
            relay.call(
                ctx.warn, f"table {unit['db']}.{unit['schema']}.{unit['table']} was dropped after the run was prepared: left out"
            )
        staging.write_meta(UNIT_META, _json(pg))
        relay.call(
            ctx.checkpoint,
            unit["step"],
            {"done": True},
            chunks_written=written,
            bytes_done=stats["bytes"],
            items_done=int(pg.get("rows", 0)),
        )
        return {"bytes": stats["bytes"], "rows": pg.get("rows", 0)}

    def _read_unit(self, unit: dict[str, Any], snapshot: str, store: Any, tally: _Tally) -> dict[str, Any]:
        if unit["kind"] == "schema":
            return self._schema(unit, snapshot, store)
        if unit["kind"] == "roles":
            with self.server.connect(autocommit=True) as conn, self.server.errors("reading the roles"):
                found = read_roles(conn)
            store(self._cut(iter([_json(found)])))
            return {"rows": len(found["roles"]), "passwords": found["passwords"]}
        with self.server.connect(unit["db"]) as conn:
            with self.server.errors(f"joining the snapshot of {unit['db']}"):
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            if unit["kind"] == "table":
                return self._table(conn, unit, snapshot, store, tally)
            return self._large_objects(conn, unit, store, tally)

    def _cut(self, stream: Iterator[bytes]) -> Iterator[bytes | memoryview]:
        return self.chunker.cut(_Reader(stream))

    def _table(
        self, conn: psycopg.Connection[Any], unit: dict[str, Any], snapshot: str, store: Any, tally: _Tally
    ) -> dict[str, Any]:
        name = f"{unit['db']}.{unit['schema']}.{unit['table']}"
        rows = 0
        with self.server.errors(f"reading table {name}"):
            qualified = sql.Identifier(unit["schema"], unit["table"]).as_string(conn)
            if conn.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()[0] is None:  # type: ignore[index]
                return {"skipped": True, "rows": 0}  # dropped since the run was prepared
            columns = [r[0] for r in conn.execute(COLUMNS, (unit["schema"], unit["table"]))]
            estimate = conn.execute(ESTIMATED_ROWS, (qualified,)).fetchone()
            tally.total(int(estimate[0]) if estimate is not None and estimate[0] >= 0 else None)
            query = sql.SQL("COPY {} ({}) TO STDOUT").format(
                sql.Identifier(unit["schema"], unit["table"]), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            text = copyout.script(conn, snapshot, query)

        buffer = bytearray(self.chunker.read_size)  # every block of the table read into it

        def filled(start: int, end: int) -> None:
            nonlocal rows
            rows += buffer.count(b"\n", start, end)  # text COPY escapes newlines in values: one per row
            tally.rows = rows

        try:
            with copyout.copy_out(self.server, unit["db"], text, f"reading table {name}") as stdout:
                store(self.chunker.cut_into(stdout, buffer, filled))
        except DavitError:
            with self.server.errors(f"reading table {name}"):
                if conn.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()[0] is None:  # type: ignore[index]
                    return {"skipped": True, "rows": 0}  # dropped between the check and the COPY
            raise
        return {"columns": columns, "rows": rows}

    def _large_objects(self, conn: psycopg.Connection[Any], unit: dict[str, Any], store: Any, tally: _Tally) -> dict[str, Any]:
        """Every large object as a header (oid, length) and its bytes, read in LO_PIECE pieces:
        a large object is never held whole in memory."""
        count = 0
        with self.server.errors(f"reading the large objects of {unit['db']}"):
            oids = [r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY oid")]
            tally.total(len(oids))

            def blobs() -> Iterator[bytes]:
                nonlocal count
                for oid in oids:
                    fd = conn.execute("SELECT lo_open(%s, %s)", (oid, INV_READ)).fetchone()[0]  # type: ignore[index]
                    size = int(conn.execute("SELECT lo_lseek64(%s, 0, 2)", (fd,)).fetchone()[0])  # type: ignore[index]
                    conn.execute("SELECT lo_close(%s)", (fd,))
                    yield LO_HEADER.pack(int(oid), size)
                    for offset in range(0, size, LO_PIECE):
                        piece = conn.execute("SELECT lo_get(%s, %s, %s)", (oid, offset, LO_PIECE)).fetchone()[0]  # type: ignore[index]
                        yield bytes(piece)
                    count += 1
                    tally.rows = count

            store(self._cut(blobs()))
        return {"rows": count}

    def _schema(self, unit: dict[str, Any], snapshot: str, store: Any) -> dict[str, Any]:
        db = unit["db"]
        leave_out = [a for s, t in unit.get("leave_out", []) for a in ("--exclude-table", _pattern(s, t))]
        argv = [tool("pg_dump"), *self.server.tool_args(db), f"--snapshot={snapshot}", "--schema-only", "-Fc", *leave_out]
        with self.server.passfile_env() as env, tempfile.TemporaryFile() as errfile:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile, env=env)
            assert proc.stdout is not None
            try:
                store(self._cut(iter(lambda: proc.stdout.read(READ_SIZE), b"")))  # type: ignore[union-attr]
            finally:
                proc.stdout.close()
                if proc.poll() is None and proc.returncode is None:
                    proc.wait()
            finish_tool(self.server, proc, errfile, argv, f"dumping the schema of {db}")
        with self.server.connect(db) as conn, self.server.errors(f"reading the sequences of {db}"):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            sequences = []
            for s, name in conn.execute(SEQUENCES).fetchall():
                value, called = conn.execute(
                    sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(s, name))
                ).fetchone()  # type: ignore[misc]
                sequences.append([s, name, int(value), bool(called)])
            matviews = [list(r) for r in conn.execute(MATVIEWS)]
            tables = [[s, t, list(objects), list(owned)] for s, t, objects, owned in conn.execute(TABLE_OBJECTS)]
            owner, acl = conn.execute(DATABASE_ACL).fetchone()  # type: ignore[misc]
        return {
            "sequences": sequences,
            "matviews": matviews,
            "data_only": unit.get("leave_out", []),
            "tables": tables,
            "database": {"owner": owner, "acl": acl},
        }

    # --- publish -------------------------------------------------------------------------------

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        import json

        if self.repo.snapshot_exists(self.run_id):
            return {"snapshot_id": self.run_id, "already_published": True}
        units: list[Unit] = []
        points: dict[str, set[str]] = {}
        for index, unit in enumerate(self.units):
            staging = self.repo.staging(self.run_id, part=index)
            pg = json.loads(staging.read_meta(UNIT_META))
            if pg.get("skipped"):
                continue
            point = pg.pop("snapshot")
            if unit["kind"] != "roles":
                points.setdefault(unit["db"], set()).add(point)
            chunks = staging.chunk_list()
            paths = {"schema": schema_path(unit["db"]), "lo": lo_path(unit["db"]), "roles": ROLES_PATH}
            path = paths.get(unit["kind"]) or table_path(unit["db"], unit["schema"], unit["table"])
            units.append(Unit(path=path, pg=pg, chunks=chunks, size=int(pg.pop("bytes"))))
        for u in units:
            if u.kind == "schema":
                u.pg["consistent"] = len(points[u.db]) == 1
        stats = {
            "databases": len(points),
            "tables": sum(1 for u in units if u.kind == "table"),
            "rows": sum(int(u.pg.get("rows", 0)) for u in units if u.kind == "table"),
            "chunk_refs": sum(len(u.chunks) for u in units),
        }
        src = self.spec.source
        manifest = {
            "id": self.run_id,
            "job": self.spec.name,
            "kind": "postgres",
            "run_id": self.run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "server": self.details.get("server"),
                "databases": list(src.databases),
                "include": list(src.include),
                "exclude": list(src.exclude),
                "server_version": self.details.get("server_version"),
                "consistent": {db: len(p) == 1 for db, p in sorted(points.items())},
            },
            "parent": None,
            "stats": stats,
        }
        self.repo.publish_snapshot(manifest, tree_zst(units, self.tuning.compression_level))
        for index in range(len(self.units)):
            self.repo.staging(self.run_id, part=index).remove()
        return {"snapshot_id": self.run_id, **stats}

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        from davit.adapters.postgres.layout import read_tree
        from davit.domain.errors import SourceMissing

        info = self.repo.resolve(self.run_id)
        missing = self.repo.missing_chunks(bytes.fromhex(c) for u in read_tree(self.repo.tree_bytes(info)) for c in u.chunks)
        if missing:
            raise SourceMissing(info.where, f"{len(missing)} chunks it names are missing from the repository")
        return {"snapshot_id": self.run_id, **info.stats}


class _Tally:
    """A unit's rows read so far, for its checkpoints, and its step's total told to the run
    (through the relay: every context call is made from the run's thread)."""

    def __init__(self, ctx: RunContext, relay: Relay, step: str) -> None:
        self._ctx, self._relay, self._step = ctx, relay, step
        self.rows = 0

    def total(self, items: int | None) -> None:
        if items is not None:
            self._relay.call(self._ctx.step_total, self._step, items_total=items)


class _Reader:
    """A file-like `read(n)` over an iterator of byte blocks (what the chunker reads)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._held = b""

    def read(self, size: int = -1, /) -> bytes:
        parts, got = [self._held] if self._held else [], len(self._held)
        self._held = b""
        while size < 0 or got < size:
            block = next(self._blocks, b"")
            if not block:
                break
            parts.append(block)
            got += len(block)
        data = b"".join(parts)
        if size >= 0 and len(data) > size:
            data, self._held = data[:size], data[size:]
        return data


def _pattern(schema: str, table: str) -> str:
    """A pg_dump table pattern naming exactly this table (quoted: no wildcard, case kept)."""
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def _json(value: dict[str, Any]) -> bytes:
    import json

    return json.dumps(value, sort_keys=True).encode()

"""postgres.backup then postgres.restore under another name, against the real PostgreSQL peer:
a schema using the features users rely on, compared table by table, row by row, and object by
object; and a refused password named by user and server, never shown."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from davit.adapters.postgres.backup import PostgresBackupWork
from davit.adapters.postgres.client import PostgresAuthFailed, PostgresUnreachable
from davit.adapters.postgres.restore import PostgresRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.postgres

FIDELITY = r"""
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed Case ""quoted"" table" (id serial PRIMARY KEY, "select" text, "É" citext);
CREATE TABLE kinds (
  id bigserial PRIMARY KEY, arr int[], tags text[][], doc jsonb, raw bytea, big numeric(100, 0), exact numeric,
  at timestamptz, span interval, day date, m mood, p positive, r int4range, fr floatrange, h hstore,
  total int GENERATED ALWAYS AS (coalesce(array_length(arr, 1), 0) * 10) STORED
);
CREATE TABLE measurements (id int, at date NOT NULL, v float8) PARTITION BY RANGE (at);
CREATE TABLE measurements_2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE docs (id int PRIMARY KEY, blob oid, kind_id bigint REFERENCES kinds(id));
CREATE TABLE audit (at timestamptz DEFAULT now(), what text);
CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit(what) VALUES (TG_OP); RETURN NEW; END $$;
CREATE TRIGGER noted AFTER INSERT ON docs FOR EACH ROW EXECUTE FUNCTION note();
CREATE VIEW happy AS SELECT id, doc FROM kinds WHERE m = 'happy';
CREATE MATERIALIZED VIEW counts AS SELECT m, count(*) AS n FROM kinds GROUP BY m;
CREATE INDEX kinds_doc ON kinds USING gin (doc);
INSERT INTO kinds (arr, tags, doc, raw, big, exact, at, span, day, m, p, r, fr, h) VALUES
  ('{1,2,3}', '{{a,b},{"c d","e\"f"}}', '{"k": [1, {"n": null}], "u": "\u00e9\u2603"}', '\x00ff0a5c'::bytea,
   repeat('9', 100)::numeric, 'NaN', '2024-02-29 23:59:59.999999+05:30', '1 year 2 mons 3 days 04:05:06.7', 'infinity',
   'happy', 7, '[1,10)', '[0.5,1.5]', 'a=>1, "b c"=>NULL'),
  (NULL, NULL, 'null', '', -1e-30, '-0.000001', '-infinity', '-178000000 years', '-infinity', 'sad', 1, 'empty', NULL, ''),
  ('{}', '{}', '[]', E'tab\\011newline\\012', 0, 1e30, 'epoch', '0', '4713-01-01 BC', 'ok', 2147483647, '(,)', '(,0]', NULL);
INSERT INTO kinds (doc, raw) SELECT jsonb_build_object('i', i, 's', repeat(E'line\n\t\\', i % 7)), decode(md5(i::text), 'hex')
  FROM generate_series(1, 3000) i;
INSERT INTO "Odd Schema"."Mixed Case ""quoted"" table" ("select", "É") VALUES (E'back\\slash', 'ÀÉ'), (NULL, 'x');
INSERT INTO measurements SELECT i, date '2023-06-01' + i, i / 3.0 FROM generate_series(1, 400) i;
INSERT INTO docs VALUES (1, lo_from_bytea(0, '\x000102ff'::bytea), 1),
  (2, lo_from_bytea(0, convert_to(repeat('x', 100000), 'UTF8')), 2);
REFRESH MATERIALIZED VIEW counts;
SELECT setval('kinds_id_seq', 50000);
"""

TABLES_SQL = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"""
OBJECTS_SQL = """
SELECT 'view ' || viewname || ': ' || definition FROM pg_views WHERE schemaname = 'public'
UNION ALL SELECT 'matview ' || matviewname || ': ' || definition FROM pg_matviews
UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog')
UNION ALL SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'function ' || pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = 'public' AND p.prokind = 'f'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
UNION ALL SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint
  WHERE connamespace <> 'pg_catalog'::regnamespace
UNION ALL SELECT 'type ' || typname || ' ' || typtype::text FROM pg_type
  WHERE typnamespace = 'public'::regnamespace AND typtype IN ('e','d','r')
UNION ALL SELECT 'extension ' || extname FROM pg_extension
UNION ALL SELECT 'column ' || attrelid::regclass::text || '.' || attname || ' ' || format_type(atttypid, atttypmod)
    || ' gen=' || attgenerated::text
  FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped AND attrelid IN (SELECT oid FROM pg_class
    WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace))
ORDER BY 1"""


class Pg:
    def __init__(self, peer: PostgresPeer) -> None:
        self.peer = peer
        self.tag = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def connect(self, db: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        p = self.peer
        return psycopg.connect(host=p.host, port=p.port, user=p.user, password=p.password, dbname=db, autocommit=autocommit)

    def name(self, base: str) -> str:
        full = f"{base}_{self.tag}"
        self.created.append(full)
        return full

    def server(self, **more: Any) -> dict[str, Any]:
        p = self.peer
        return {"host": p.host, "port": p.port, "user": p.user, "password_file": p.password_file, **more}

    def snapshot_of(self, db: str) -> dict[str, Any]:
        """Every table's rows (as text, sorted) and every object's definition."""
        with self.connect(db) as conn:
            tables = {}
            for s, t in conn.execute(TABLES_SQL).fetchall():
                q = psycopg.sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(psycopg.sql.Identifier(s, t))
                tables[f"{s}.{t}"] = [r[0] for r in conn.execute(q)]
            objects = [r[0] for r in conn.execute(OBJECTS_SQL)]
            blobs = conn.execute("SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1").fetchall()
            seqs = conn.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2").fetchall()
        return {"tables": tables, "objects": objects, "blobs": blobs, "sequences": seqs}


@pytest.fixture
def pg(postgres_peer: PostgresPeer) -> Iterator[Pg]:
    pg = Pg(postgres_peer)
    yield pg
    with pg.connect() as conn:
        for db in pg.created:
            conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(db)))


def backup(repo: Repository, spec: dict[str, Any], run_id: str) -> tuple[MemoryRunContext, dict[str, Any]]:
    ctx = MemoryRunContext(run_id=run_id)
    work = PostgresBackupWork(RunInputs(job_from_dict(spec, "pg.toml"), run_id, repo=repo))
    details = work.prepare(ctx)
    work.run(ctx)
    return ctx, {**details, **work.finish(ctx)}


def restore(repo: Repository, spec: dict[str, Any], run_id: str) -> dict[str, Any]:
    ctx = MemoryRunContext(run_id=run_id)
    work = PostgresRestoreWork(RunInputs(job_from_dict(spec, "pgr.toml"), run_id, repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    return work.finish(ctx)


def test_a_database_with_every_feature_comes_back_identical_under_another_name(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("shop_restored")
    with pg.connect() as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(shop)))
    with pg.connect(shop) as conn:
        conn.execute(FIDELITY)
    repo = Repository.open(tmp_path / "repo")
    _, summary = backup(repo, {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop])}, "b1")
    # kinds, the quoted table, measurements, docs, audit (filled by its trigger)
    assert summary["tables"] == 6 and summary["rows"] == 3003 + 2 + 400 + 2 + 2
    restored = restore(
        repo,
        {"name": "pgr", "kind": "postgres.restore", "source": {"job": "pg"}, "target": pg.server(rename={shop: copy})},
        "r1",
    )
    assert restored["rows"] == summary["rows"]
    assert pg.snapshot_of(copy) == pg.snapshot_of(shop)


def test_an_unchanged_database_backed_up_again_stores_almost_nothing(pg: Pg, tmp_path: Path) -> None:
    shop = pg.name("shop")
    with pg.connect() as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(shop)))
    with pg.connect(shop) as conn:
        conn.execute("CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 200000) i")
    repo = Repository.open(tmp_path / "repo")
    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop])}
    first, _ = backup(repo, spec, "b1")
    second, _ = backup(repo, spec, "b2")
    table = f"table:{shop}.public.t"
    assert sum(len(c["chunks"]) for c in first.checkpoints if c["step"] == table) > 0
    assert sum(len(c["chunks"]) for c in second.checkpoints if c["step"] == table) == 0


def test_a_wrong_password_fails_for_good_naming_user_and_server_never_the_password(pg: Pg, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-Secret-42")
    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(password_file=str(wrong))}
    with pytest.raises(PostgresAuthFailed) as caught:
        backup(Repository.open(tmp_path / "repo"), spec, "b1")
    text = str(caught.value)
    assert f"user '{pg.peer.user}'" in text and f"{pg.peer.host}:{pg.peer.port}" in text
    assert "not-the-Secret-42" not in text and pg.peer.password not in text


def test_a_server_that_does_not_answer_is_retryable(pg: Pg, tmp_path: Path) -> None:
    from tests.peers.ports import free_port

    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(port=free_port())}
    with pytest.raises(PostgresUnreachable):
        backup(Repository.open(tmp_path / "repo"), spec, "b1")

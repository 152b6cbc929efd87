"""postgres.restore into a database that exists (`if_exists` = "fail" / "merge"), and table
selection: tables left out by include/exclude are left out of the schema too (their indexes,
constraints, triggers, sequences, comments, grants, views), and `schema_only` / `data_only`
tables come back as a definition without rows / rows without a definition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from davit.adapters.postgres.backup import PostgresBackupWork
from davit.adapters.postgres.restore import PostgresRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture

pytestmark = pytest.mark.postgres

SHOP = """
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE audit (id bigserial PRIMARY KEY, what text, customer int REFERENCES customers(id));
CREATE INDEX audit_what ON audit (what);
COMMENT ON TABLE audit IS 'who did what';
COMMENT ON COLUMN audit.what IS 'the deed';
GRANT SELECT ON audit TO PUBLIC;
ALTER TABLE audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON audit USING (true);
CREATE VIEW recent AS SELECT * FROM audit ORDER BY id DESC LIMIT 10;
CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers(id), audit_id bigint REFERENCES audit(id),
  total numeric(10, 2));
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER stamped BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TABLE log (at timestamptz DEFAULT now(), line text);
CREATE TABLE lookup (code text PRIMARY KEY, label text);
INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, 50) i;
INSERT INTO audit (what, customer) SELECT 'deed ' || i, 1 + i % 50 FROM generate_series(1, 200) i;
INSERT INTO orders (customer, audit_id, total) SELECT 1 + i % 50, 1 + i % 200, i * 1.5 FROM generate_series(1, 500) i;
INSERT INTO log (line) SELECT 'line ' || i FROM generate_series(1, 30) i;
INSERT INTO lookup VALUES ('a', 'Alpha'), ('b', 'Beta');
"""


def make_db(pg: Pg, name: str, script: str) -> None:
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if script:
        with pg.connect(name) as conn:
            conn.execute(script)


def backup(
    pg: Pg, repo: Repository, shop: str, job: dict[str, Any] | None = None, tuning: Tuning | None = None, **source: Any
) -> None:
    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop], **source), **(job or {})}
    ctx = MemoryRunContext(run_id="b1")
    work = PostgresBackupWork(RunInputs(job_from_dict(spec, "pg.toml"), "b1", tuning, repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)


def restore(
    pg: Pg, repo: Repository, shop: str, copy: str, run_id: str = "r1", job: dict[str, Any] | None = None, **target: Any
) -> MemoryRunContext:
    spec = {
        "name": "pgr",
        "kind": "postgres.restore",
        "source": {"job": "pg"},
        "target": pg.server(rename={shop: copy}, **target),
        **(job or {}),
    }
    ctx = MemoryRunContext(run_id=run_id)
    work = PostgresRestoreWork(RunInputs(job_from_dict(spec, "pgr.toml"), run_id, repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def rows(pg: Pg, db: str, query: str) -> list[tuple[Any, ...]]:
    with pg.connect(db) as conn:
        return conn.execute(query).fetchall()


def relations(pg: Pg, db: str) -> set[str]:
    return {
        r[0]
        for r in rows(
            pg, db, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r','v','S','i')"
        )
    }


def test_a_restore_into_a_database_that_exists_fails_by_default_and_leaves_it_alone(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, SHOP)
    make_db(pg, copy, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('mine');")
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    with pytest.raises(PermanentError) as caught:
        restore(pg, repo, shop, copy)
    assert f"database {copy} exists" in str(caught.value) and "if_exists" in str(caught.value)
    assert rows(pg, copy, "SELECT v FROM precious") == [("mine",)]
    assert "customers" not in relations(pg, copy)


def test_merge_loads_the_snapshot_into_a_database_that_exists_and_keeps_its_other_tables(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, SHOP)
    make_db(
        pg,
        copy,
        "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('mine');"
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL); INSERT INTO customers (name) VALUES ('stale');",
    )
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    ctx = restore(pg, repo, shop, copy, if_exists="merge")
    assert rows(pg, copy, "SELECT v FROM precious") == [("mine",)]
    assert rows(pg, copy, "SELECT count(*), min(name) FROM customers") == [(50, "customer 1")]  # replaced, not added to
    assert rows(pg, copy, "SELECT count(*) FROM orders") == [(500,)]
    assert any("objects that exist were kept" in w for w in ctx.warnings)
    # merged again: the same rows, none twice
    restore(pg, repo, shop, copy, run_id="r2", if_exists="merge")
    assert rows(pg, copy, "SELECT count(*) FROM customers") == [(50,)]


def test_a_table_left_out_of_a_restore_is_left_out_of_its_schema_too(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, SHOP)
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop)
    restore(pg, repo, shop, copy, exclude=[f"{shop}.public.audit"])
    found = relations(pg, copy)
    assert {"customers", "orders", "log", "lookup", "customers_pkey", "orders_pkey", "orders_id_seq"} <= found
    assert not found & {"audit", "audit_id_seq", "audit_pkey", "audit_what", "recent"}
    assert rows(pg, copy, "SELECT count(*) FROM orders") == [(500,)]
    constraints = {r[0] for r in rows(pg, copy, "SELECT conname FROM pg_constraint WHERE contype = 'f'")}
    assert constraints == {"orders_customer_fkey"}  # the one pointing at audit went with it

    copy2 = pg.name("copy2")
    restore(pg, repo, shop, copy2, run_id="r2", include=[f"{shop}.public.customers", f"{shop}.public.log"])
    assert relations(pg, copy2) == {"customers", "customers_pkey", "customers_id_seq", "log"}
    assert rows(pg, copy2, "SELECT count(*) FROM log") == [(30,)]


def test_schema_only_tables_come_back_empty_and_data_only_rows_go_into_the_targets_table(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, SHOP)
    make_db(pg, copy, "CREATE TABLE lookup (code text PRIMARY KEY, label text, note text DEFAULT 'target')")
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, shop, schema_only=[f"{shop}.public.log"], data_only=[f"{shop}.public.lookup"])
    restore(pg, repo, shop, copy, if_exists="merge")
    assert rows(pg, copy, "SELECT count(*) FROM log") == [(0,)]
    assert rows(pg, copy, "SELECT column_default FROM information_schema.columns WHERE table_name = 'log' AND column_name = 'at'")
    # the target's own definition of lookup is kept (its extra column too); the rows are the snapshot's
    expected = [("a", "Alpha", "target"), ("b", "Beta", "target")]
    assert rows(pg, copy, "SELECT code, label, note FROM lookup ORDER BY 1") == expected
    assert rows(pg, copy, "SELECT count(*) FROM orders") == [(500,)]


def test_a_table_dropped_after_the_backup_was_prepared_is_left_out_with_a_warning(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, SHOP)
    repo = Repository.open(tmp_path / "repo")
    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop])}
    ctx = MemoryRunContext(run_id="b1")
    work = PostgresBackupWork(RunInputs(job_from_dict(spec, "pg.toml"), "b1", repo=repo))
    work.prepare(ctx)
    assert f"table:{shop}.public.log" in work.plan()
    with pg.connect(shop) as conn:
        conn.execute("DROP TABLE log")  # an operator's migration, between the run's prepare and its run
    work.run(ctx)
    summary = work.finish(ctx)
    assert summary["tables"] == 4
    assert [w for w in ctx.warnings if f"{shop}.public.log was dropped" in w]
    restore(pg, repo, shop, copy)
    assert "log" not in relations(pg, copy)
    assert rows(pg, copy, "SELECT count(*) FROM orders") == [(500,)]


def test_a_rename_onto_a_database_the_snapshot_also_holds_is_refused_before_anything_is_restored(pg: Pg, tmp_path: Path) -> None:
    shop, old = pg.name("shop"), pg.name("old")
    make_db(pg, shop, SHOP)
    make_db(pg, old, SHOP)
    repo = Repository.open(tmp_path / "repo")
    spec = {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop, old])}
    ctx = MemoryRunContext(run_id="b1")
    work = PostgresBackupWork(RunInputs(job_from_dict(spec, "pg.toml"), "b1", repo=repo))
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    with pytest.raises(PermanentError, match=f"databases {old} and {shop} of the snapshot would both be restored into {shop}"):
        restore(pg, repo, old, shop, job=None, if_exists="merge")
    assert rows(pg, shop, "SELECT count(*) FROM orders") == [(500,)]  # left alone

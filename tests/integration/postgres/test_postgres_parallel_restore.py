"""postgres.restore loads `parallel` tables at once, shown by the server, not by timing: a second
connection holds a lock on one target table (`LOCK TABLE ... IN SHARE MODE` in an open
transaction) and the restore's load of it (its TRUNCATE) is seen waiting for it in
pg_stat_activity. With parallel = 2 the other table is loaded and committed while that wait
lasts; with parallel = 1 the other table's load starts only after the held one is done."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from davit.adapters.postgres.restore import TABLE, PostgresRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.integration.parallel_evidence import DEADLINE, OrderedContext, wait_for
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, rows

pytestmark = pytest.mark.postgres
TABLES = "CREATE TABLE a_held (id int PRIMARY KEY, v text); CREATE TABLE b_free (id int PRIMARY KEY);"


def waiting_loads(pg: Pg, db: str, blocker: int) -> list[str]:
    """The statements of sessions on `db` (other than the blocker) waiting for a lock."""
    found = rows(
        pg,
        "postgres",
        f"SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> {blocker} AND datname = '{db}'",
    )
    return [str(r[0]) for r in found]


def restore_with_one_table_held(pg: Pg, tmp_path: Path, parallel: int) -> tuple[OrderedContext, str, bool]:
    """Restore `a_held` and `b_free` (in that order) into a target whose `a_held` a second
    connection keeps locked until the restore's load of it is seen waiting and, with
    parallel > 1, until `b_free` is committed. Says whether `b_free` was loaded while `a_held`
    was still locked."""
    shop, target = pg.name("par_shop"), pg.name("par_target")
    make_db(pg, shop, TABLES + "INSERT INTO a_held VALUES (1, 'one'), (2, 'two'); INSERT INTO b_free VALUES (1), (2), (3);")
    make_db(pg, target, TABLES)
    repo = Repository.open(tmp_path / "repo")
    # data_only: the restore's pre-data leaves the target's tables alone
    backup(pg, repo, shop, data_only=[f"{shop}.public.a_held", f"{shop}.public.b_free"])
    spec = {
        "name": "pgr",
        "kind": "postgres.restore",
        "source": {"job": "pg"},
        "target": pg.server(rename={shop: target}, if_exists="merge"),
        "parallel": parallel,
    }
    ctx = OrderedContext(run_id="r1")
    failed: list[BaseException] = []

    def restore() -> None:
        try:
            work = PostgresRestoreWork(RunInputs(job_from_dict(spec, "pgr.toml"), "r1", repo=repo))
            work.prepare(ctx)
            work.run(ctx)
            work.finish(ctx)
        except BaseException as exc:  # handed to the test's thread
            failed.append(exc)

    def count(table: str) -> int:
        return int(rows(pg, target, f"SELECT count(*) FROM {table}")[0][0])

    with pg.connect(target, autocommit=False) as blocker:
        blocker.execute("LOCK TABLE a_held IN SHARE MODE")
        pid = int(blocker.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        worker = threading.Thread(target=restore, daemon=True)
        worker.start()
        try:
            wait_for("the load of `a_held` waiting for the lock", lambda: bool(waiting_loads(pg, target, pid)), failed)
            if parallel > 1:
                wait_for("`b_free` loaded", lambda: f"{TABLE}{target}.public.b_free" in ctx.done, failed)
            free_while_held = count("b_free") == 3
            assert waiting_loads(pg, target, pid), "the load of `a_held` stopped waiting while the lock was held"
            ctx.order.append(("mark", "unlocked"))
        finally:
            blocker.rollback()
    worker.join(DEADLINE)
    assert not worker.is_alive(), "the restore did not end after the lock was released"
    assert not failed, failed
    assert count("a_held") == 2 and count("b_free") == 3
    return ctx, target, free_while_held


def test_with_parallel_2_a_table_loads_while_another_one_waits_for_its_lock(pg: Pg, tmp_path: Path) -> None:
    ctx, target, free_while_held = restore_with_one_table_held(pg, tmp_path, parallel=2)
    held, free = f"{TABLE}{target}.public.a_held", f"{TABLE}{target}.public.b_free"
    assert free_while_held  # committed and visible to another connection while `a_held` was locked
    unlocked = ctx.at("mark", "unlocked")
    assert ctx.at("started", held) < unlocked and ctx.at("completed", free) < unlocked < ctx.at("completed", held)


def test_with_parallel_1_the_next_table_waits_for_the_held_one(pg: Pg, tmp_path: Path) -> None:
    ctx, target, free_while_held = restore_with_one_table_held(pg, tmp_path, parallel=1)
    held, free = f"{TABLE}{target}.public.a_held", f"{TABLE}{target}.public.b_free"
    assert not free_while_held
    assert ctx.at("started", held) < ctx.at("mark", "unlocked") < ctx.at("completed", held) < ctx.at("started", free)

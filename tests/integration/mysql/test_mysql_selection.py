"""Selection on the MariaDB peer: a backup keeps the tables its `include` patterns name but
those its `exclude` patterns name (a `schema_only` table keeps its definition, not its rows),
and a restore of that snapshot brings back only the tables its own `include`/`exclude` choose,
each with every row it holds in the snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, run_backup, run_restore

pytestmark = pytest.mark.mariadb


def _tables(maria: Maria, db: str) -> dict[str, int]:
    """Each table of `db` and its row count."""
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
            names = sorted(r[0] for r in cur.fetchall())
            out: dict[str, Any] = {}
            for name in names:
                cur.execute(f"SELECT COUNT(*) FROM `{name}`")
                out[name] = cur.fetchone()[0]
            return out
    finally:
        conn.close()


@pytest.fixture
def shop(maria: Maria) -> str:
    db = maria.db("sel_shop")
    maria.execute(None, f"CREATE DATABASE `{db}`")
    statements = []
    for name, rows in (("orders", 3), ("customers", 2), ("cache", 4), ("log_2024", 5), ("log_2025", 6)):
        statements.append(f"CREATE TABLE `{name}` (id INT PRIMARY KEY)")
        statements.append(f"INSERT INTO `{name}` VALUES " + ",".join(f"({i})" for i in range(rows)))
    maria.execute(db, *statements)
    return db


def test_a_backup_keeps_what_include_names_but_exclude_and_schema_only_keeps_no_rows(
    maria: Maria, repo: Repository, shop: str
) -> None:
    spec = backup_spec(
        "sel", maria, databases=[shop], include=[f"{shop}.*"], exclude=[f"{shop}.log_*"], schema_only=[f"{shop}.cache"]
    )
    _, details = run_backup(repo, spec, "b1")
    assert details["tables"] == 3 and details["rows"] == 3 + 2, details
    copy = maria.db("sel_copy")
    run_restore(repo, restore_spec("sel-r", maria, {"snapshot": "b1"}, rename={shop: copy}), "r1")
    assert _tables(maria, copy) == {"cache": 0, "customers": 2, "orders": 3}


def test_a_restore_brings_back_only_the_tables_its_include_and_exclude_choose(maria: Maria, repo: Repository, shop: str) -> None:
    run_backup(repo, backup_spec("sel", maria, databases=[shop]), "b1")
    only = maria.db("sel_only")
    spec = restore_spec("sel-r", maria, {"snapshot": "b1"}, rename={shop: only}, include=[f"{shop}.log_*", f"{shop}.orders"])
    _, restored = run_restore(repo, spec, "r1")
    assert _tables(maria, only) == {"log_2024": 5, "log_2025": 6, "orders": 3}
    assert restored["rows"] == 5 + 6 + 3, restored
    but = maria.db("sel_but")
    spec = restore_spec("sel-r", maria, {"snapshot": "b1"}, rename={shop: but}, exclude=[f"{shop}.log_*"])
    run_restore(repo, spec, "r2")
    assert _tables(maria, but) == {"cache": 4, "customers": 2, "orders": 3}

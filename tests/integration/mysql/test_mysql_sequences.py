"""MariaDB sequences are backed up (definition and state) and restored under another name: the
restored sequence hands out the value the source would have handed out next (past its cache,
as mariadb-dump's SETVAL does), keeps its bounds, increment and cycle, and a table whose
default draws from it goes on from there. Before, sequences were skipped with a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, run_backup, run_restore
from tests.integration.mysql.test_mysql_sql_export import davit, replay

pytestmark = pytest.mark.mariadb


def one(maria: Maria, db: str, statement: str) -> Any:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def test_sequences_come_back_with_their_state(maria: Maria, repo: Repository) -> None:
    shop, copy = maria.db("shop"), maria.db("copy")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(
        shop,
        "CREATE SEQUENCE order_no START WITH 1000 INCREMENT BY 10 MAXVALUE 99999 CACHE 5 CYCLE",
        "CREATE SEQUENCE plain",
        "CREATE TABLE orders (id INT PRIMARY KEY DEFAULT NEXTVAL(order_no), note VARCHAR(10))",
        "INSERT INTO orders (note) VALUES ('a'), ('b'), ('c')",
    )
    source_state = one(maria, shop, "SELECT * FROM order_no")
    ctx, _ = run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop]), "b1")
    assert not [w for w in ctx.warnings if "sequence" in w]

    run_restore(repo, restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: copy}), "r1")
    assert one(maria, copy, "SELECT * FROM order_no") == source_state
    kinds = one(maria, copy, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
    assert sorted(kinds) == [("order_no", "SEQUENCE"), ("orders", "BASE TABLE"), ("plain", "SEQUENCE")]
    next_source = one(maria, shop, "SELECT NEXTVAL(order_no)")
    assert one(maria, copy, "SELECT NEXTVAL(order_no)") == next_source
    maria.execute(copy, "INSERT INTO orders (note) VALUES ('d')")
    assert one(maria, copy, "SELECT id, note FROM orders ORDER BY id") == ((1000, "a"), (1010, "b"), (1020, "c"), (1060, "d"))
    assert one(maria, copy, "SELECT NEXTVAL(plain)") == ((1,),)


def test_an_exported_script_brings_a_sequence_back_with_its_state(maria: Maria, tmp_path: Path) -> None:
    shop, copy = maria.db("shop"), maria.db("replayed")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(shop, "CREATE SEQUENCE order_no START WITH 7 INCREMENT BY 3 CACHE 0", "SELECT NEXTVAL(order_no)")
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop]), "b1")
    out = tmp_path / "shop.sql"
    davit(home, "export", "sql", "b1", str(out), "--rename", f"{shop}={copy}")
    replay(maria, tmp_path, out.read_bytes())
    assert one(maria, copy, "SELECT * FROM order_no") == one(maria, shop, "SELECT * FROM order_no")
    assert one(maria, copy, "SELECT NEXTVAL(order_no)") == ((10,),)

"""A MariaDB database with awkward types and every kind of object, backed up and restored under
another name: every row, every table's definition and every view, routine, trigger and event
definition come back the same."""

from __future__ import annotations

from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, contents, restore_spec, rows_of, run_backup, run_restore

pytestmark = pytest.mark.mariadb

FIDELITY_SCHEMA = [
    """CREATE TABLE everything (
        id INT PRIMARY KEY AUTO_INCREMENT,
        b BLOB, j JSON, d DECIMAL(65,30), dt DATETIME(6), ts TIMESTAMP(6) NULL, bits BIT(13),
        g GEOMETRY, p POINT, poly POLYGON,
        s4 VARCHAR(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci,
        latin VARCHAR(50) CHARACTER SET latin1 COLLATE latin1_swedish_ci,
        bin_ci VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
        vb VARBINARY(20), zd DATE, zdt DATETIME, f FLOAT, dbl DOUBLE, e ENUM('a','b'), st SET('x','y'),
        y YEAR, tm TIME(3), u BIGINT UNSIGNED, t LONGTEXT,
        gen_v INT AS (id * 2) VIRTUAL, gen_s VARCHAR(60) AS (CONCAT(s4, '!')) STORED,
        inv INT INVISIBLE DEFAULT 7
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    "CREATE TABLE parent (a INT, b VARCHAR(10), PRIMARY KEY (a, b)) ENGINE=InnoDB",
    """CREATE TABLE child (id INT PRIMARY KEY, a INT, b VARCHAR(10),
        FOREIGN KEY (a, b) REFERENCES parent (a, b) ON DELETE CASCADE) ENGINE=InnoDB""",
    "CREATE TABLE no_key (x INT, y TEXT) ENGINE=InnoDB",
    "CREATE TABLE `odd name ``quoted``` (`col with space` INT PRIMARY KEY, `ключ` VARCHAR(10)) ENGINE=InnoDB",
    "CREATE TABLE empty_one (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE many (id INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB",
    "CREATE TABLE log_aria (id INT PRIMARY KEY, msg TEXT) ENGINE=Aria",
    "CREATE VIEW v_base AS SELECT id, s4 FROM everything WHERE id < 100",
    "CREATE VIEW v_on_view AS SELECT COUNT(*) AS n FROM v_base",
    "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
    "CREATE PROCEDURE count_many(OUT n INT) BEGIN SELECT COUNT(*) INTO n FROM many; END",
    "CREATE TRIGGER child_upper BEFORE INSERT ON child FOR EACH ROW SET NEW.b = UPPER(NEW.b)",
    "CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00' DISABLE DO DELETE FROM no_key WHERE x < 0",
]

AWKWARD_ROWS = [
    "SET SESSION sql_mode = ''",  # zero dates are allowed only outside strict mode
    """INSERT INTO everything
       (id, b, j, d, dt, ts, bits, g, p, poly, s4, latin, bin_ci, vb, zd, zdt, f, dbl, e, st, y, tm, u, t, inv)
       VALUES (1, 0x00FF00DEADBEEF, '{"k": [1, 2.5, "x\\\\u00e9"], "n": null}',
       '12345678901234567890123456789012345.123456789012345678901234567890',
       '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.499999', b'1010101010101',
       ST_GeomFromText('LINESTRING(0 0, 1 1, 2 3.5)'), POINT(1.5, -2.25),
       ST_GeomFromText('POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))'),
       'h\U0001f600llo \\'quoted\\' back\\\\slash', 'caf\u00e9', 'Case', 0x000102, '0000-00-00', '0000-00-00 00:00:00',
       0.1234567, 1.7976931348623157e308, 'b', 'x,y', 2155, '-838:59:59.000', 18446744073709551615,
       REPEAT('long text \u00e9 ', 5000), 42)""",
    """INSERT INTO everything (id, b, j, s4, vb, t)
       VALUES (2, '', '[]', '', '', CONCAT('nul', CHAR(0), 'byte', CHAR(13), CHAR(10), CHAR(26)))""",
    "INSERT INTO everything (id) VALUES (3)",
    "INSERT INTO parent VALUES (1, 'A'), (2, 'B')",
    "INSERT INTO child VALUES (10, 1, 'a'), (11, 2, 'b')",
    "INSERT INTO no_key VALUES (1, 'same'), (1, 'same'), (NULL, NULL), (-5, 'neg')",
    "INSERT INTO `odd name ``quoted``` VALUES (1, 'значение')",
    "INSERT INTO many SELECT seq, REPEAT(CHAR(65 + seq % 26), 150) FROM seq_1_to_3000",
    "INSERT INTO log_aria VALUES (1, 'aria row')",
]


def make_fidelity_db(maria: Maria, db: str) -> None:
    maria.execute(None, f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    maria.execute(db, *FIDELITY_SCHEMA, *AWKWARD_ROWS)


def test_every_type_and_object_comes_back_under_another_name(maria: Maria, repo: Repository) -> None:
    shop, restored = maria.db("shop"), maria.db("shop_restored")
    make_fidelity_db(maria, shop)
    ctx, details = run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop], chunk_kib=16), "b1")
    assert details["tables"] == 8 and details["rows"] == 3 + 2 + 2 + 4 + 1 + 0 + 3000 + 1
    assert any("log_aria (Aria)" in w for w in ctx.warnings), ctx.warnings  # outside the snapshot: said so
    spec = restore_spec("shop-restore", maria, {"snapshot": "b1"}, rename={shop: restored})
    _, summary = run_restore(repo, spec, "r1")
    assert summary["rows"] == details["rows"]
    original, copy = contents(maria, shop), contents(maria, restored)
    assert sorted(copy) == sorted(original)
    for key in original:
        assert copy[key] == original[key], key
    assert len(original["rows many"]) == 3000 and original["rows everything"][0][0] == "1"


def test_a_second_backup_of_an_unchanged_database_stores_almost_nothing(maria: Maria, repo: Repository) -> None:
    shop = maria.db("shop")
    make_fidelity_db(maria, shop)
    spec = backup_spec("shop-nightly", maria, databases=[shop], chunk_kib=16)
    _, first = run_backup(repo, spec, "b1")
    _, second = run_backup(repo, spec, "b2")
    assert first["bytes_stored"] > 0 and second["bytes_stored"] == 0
    assert second["rows"] == first["rows"]


def test_a_row_inserted_in_the_middle_changes_few_chunks(maria: Maria, repo: Repository) -> None:
    shop = maria.db("shop")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(
        shop,
        "CREATE TABLE many (id INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB",
        "INSERT INTO many SELECT seq * 2, REPEAT(CHAR(65 + seq % 26), 150) FROM seq_1_to_20000",
    )
    spec = backup_spec("shop-nightly", maria, databases=[shop], chunk_kib=64)
    _, first = run_backup(repo, spec, "b1")
    maria.execute(shop, "INSERT INTO many VALUES (20001, 'new row in the middle')")
    _, second = run_backup(repo, spec, "b2")
    assert first["chunk_refs"] >= 20
    assert 0 < second["bytes_stored"] < first["bytes_stored"] * 0.2, (first, second)


def test_if_exists_fail_refuses_an_existing_database_and_drop_replaces_it(maria: Maria, repo: Repository) -> None:
    shop, target = maria.db("shop"), maria.db("target")
    maria.execute(None, f"CREATE DATABASE `{shop}`", f"CREATE DATABASE `{target}`")
    maria.execute(shop, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    maria.execute(target, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (99)", "CREATE TABLE other (x INT)")
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop]), "b1")
    with pytest.raises(Exception, match=f"{target}.*exist"):
        run_restore(repo, restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target}), "r1")
    run_restore(repo, restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target}, if_exists="merge"), "r2")
    assert rows_of(maria, target, "t") == [("1",), ("2",)]
    assert _tables(maria, target) == ["other", "t"]  # merge keeps what the snapshot does not hold
    run_restore(repo, restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target}, if_exists="drop"), "r3")
    assert _tables(maria, target) == ["t"]


def _tables(maria: Maria, db: str) -> list[Any]:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            return sorted(r[0] for r in cur.fetchall())
    finally:
        conn.close()

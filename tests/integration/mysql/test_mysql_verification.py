"""A restore is verified: each table's row count after loading against the snapshot's. An
imported mariadb-dump script whose `INSERT IGNORE` holds one row twice counts three rows in the
snapshot, and the server keeps two: the restore fails naming the table and both counts (never
reports success with a row missing), while a table whose count agrees passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.mysql.importdump import import_sql
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError
from tests.integration.mysql.helpers import SMALL, Maria, restore_spec, run_restore

pytestmark = pytest.mark.mariadb


def test_a_table_whose_loaded_count_differs_from_the_snapshots_fails_the_restore_naming_it(
    maria: Maria, repo: Repository, tmp_path: Path
) -> None:
    db, copy = maria.db("ver_src"), maria.db("ver_copy")
    script = tmp_path / "dump.sql"
    script.write_bytes(
        f"CREATE DATABASE `{db}`;\nUSE `{db}`;\n"
        "CREATE TABLE `ok` (`id` int PRIMARY KEY);\nINSERT INTO `ok` VALUES (1),(2);\n"
        "CREATE TABLE `twice` (`id` int PRIMARY KEY);\nINSERT IGNORE INTO `twice` VALUES (1),(1),(2);\n".encode()
    )
    info = import_sql(repo, script, "dump", "s1", SMALL, None)
    assert info.stats["rows"] == 5  # the script's rows, as written
    with pytest.raises(PermanentError) as failed:
        run_restore(repo, restore_spec("back", maria, {"job": "dump"}, rename={db: copy}), "r1")
    said = str(failed.value)
    # 2 rows, as `mariadb` replaying the script keeps: the load inserts row by row (unique_checks
    # on). Under unique_checks = 0 MariaDB 10.11 took it in its bulk mode for an empty table
    # (every row of the transaction buffered and sorted at the commit: twice the server's CPU),
    # where a duplicate undid the whole statement, IGNORE or not, and 0 rows were kept
    assert f"{copy}.twice: 2 rows after loading, the snapshot holds 3" in said, said
    assert f"{copy}.ok" not in said, said

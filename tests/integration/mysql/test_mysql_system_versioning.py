"""MariaDB system-versioned tables (`WITH SYSTEM VERSIONING`): a backup keeps every version of
every row with its row start and end (what `mariadb-dump --dump-history` keeps), and a restore
under another name brings the same history back, implicit ROW_START/ROW_END or named invisible
period columns, partitioned by SYSTEM_TIME or not; restoring again replaces the history, never
doubles it; a script from `davit export sql` brings it back as well. Transaction-precise
versioning (periods of transaction ids, which only the source server knows) keeps the current
rows only, and the backup says so naming the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, run_backup, run_restore
from tests.integration.mysql.test_mysql_sql_export import davit, replay

pytestmark = pytest.mark.mariadb

HISTORY = [
    "CREATE TABLE implicit (id INT PRIMARY KEY, v VARCHAR(20)) WITH SYSTEM VERSIONING",
    "CREATE TABLE named (id INT PRIMARY KEY, v VARCHAR(20), "
    "`from` TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE, "
    "`until` TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME(`from`, `until`)) "
    "WITH SYSTEM VERSIONING",
    "CREATE TABLE parted (id INT PRIMARY KEY, v VARCHAR(20)) WITH SYSTEM VERSIONING "
    "PARTITION BY SYSTEM_TIME (PARTITION p_hist HISTORY, PARTITION p_cur CURRENT)",
    "CREATE TABLE trx (id INT PRIMARY KEY, v VARCHAR(20), s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START, "
    "e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END, PERIOD FOR SYSTEM_TIME(s, e)) ENGINE=InnoDB WITH SYSTEM VERSIONING",
]
EDITS = [
    "INSERT INTO {t} (id, v) VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    "UPDATE {t} SET v = 'one, again' WHERE id = 1",
    "UPDATE {t} SET v = 'one, thrice' WHERE id = 1",
    "DELETE FROM {t} WHERE id = 2",
]
PERIODS = {"implicit": ("ROW_START", "ROW_END"), "named": ("`from`", "`until`"), "parted": ("ROW_START", "ROW_END")}


def versions(maria: Maria, db: str, table: str) -> list[tuple[Any, ...]]:
    start, end = PERIODS[table]
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, v, {start}, {end} FROM {table} FOR SYSTEM_TIME ALL ORDER BY id, {end}")
            return list(cur.fetchall())
    finally:
        conn.close()


def current(maria: Maria, db: str, table: str) -> list[tuple[Any, ...]]:
    conn = maria.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
            return list(cur.fetchall())
    finally:
        conn.close()


def test_history_of_system_versioned_tables_comes_back_whole(maria: Maria, repo: Repository) -> None:
    src, dst = maria.db("sv_src"), maria.db("sv_dst")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, *HISTORY, *[e.format(t=t) for e in EDITS for t in ("implicit", "named", "parted", "trx")])
    before = {t: versions(maria, src, t) for t in PERIODS}
    assert all(len(v) == 5 for v in before.values())  # 3 rows, 2 updates: 5 versions, 1 of them deleted

    ctx, _ = run_backup(repo, backup_spec("sv", maria, databases=[src]), "b1")
    warned = [w for w in ctx.warnings if "system versioning" in w]
    assert len(warned) == 1 and f"{src}.trx" in warned[0] and "only the current rows" in warned[0], ctx.warnings
    _, restored = run_restore(repo, restore_spec("sv-r", maria, {"snapshot": "b1"}, rename={src: dst}), "r1")

    for table in PERIODS:
        assert versions(maria, dst, table) == before[table], table
        assert current(maria, dst, table) == [(1, "one, thrice"), (3, "three")]
    assert current(maria, dst, "trx") == [(1, "one, thrice"), (3, "three")]
    assert restored["rows"] == 3 * 5 + 2

    # loaded again into the same tables (a resumed step does the same): replaced, never doubled
    run_restore(repo, restore_spec("sv-r", maria, {"snapshot": "b1"}, rename={src: dst}, if_exists="merge"), "r2")
    for table in PERIODS:
        assert versions(maria, dst, table) == before[table], table


def test_history_comes_back_through_an_exported_script_too(maria: Maria, tmp_path: Path) -> None:
    src, dst = maria.db("sv_src"), maria.db("sv_script")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, *HISTORY[:3], *[e.format(t=t) for e in EDITS for t in ("implicit", "named", "parted")])
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("sv", maria, databases=[src]), "b1")
    out = tmp_path / "sv.sql"
    davit(home, "export", "sql", "b1", str(out), "--rename", f"{src}={dst}")
    replay(maria, tmp_path, out.read_bytes())
    for table in PERIODS:
        assert versions(maria, dst, table) == versions(maria, src, table), table


def test_history_restored_data_only_into_a_table_without_versioning_is_refused_naming_it(maria: Maria, repo: Repository) -> None:
    # The snapshot's rows are every version, each with its row start and end: an existing table
    # without versioning has no such columns (and its key would meet each row's versions).
    # Before: the server's "Unknown column 'ROW_START'", which said nothing of versioning.
    src, dst = maria.db("sv_src"), maria.db("sv_plain")
    maria.execute(None, f"CREATE DATABASE `{src}`", f"CREATE DATABASE `{dst}`")
    maria.execute(src, HISTORY[0], *[e.format(t="implicit") for e in EDITS])
    maria.execute(dst, "CREATE TABLE implicit (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO implicit VALUES (9, 'kept')")
    run_backup(repo, backup_spec("sv", maria, databases=[src], data_only=[f"{src}.implicit"]), "b1")
    with pytest.raises(PermanentError) as caught:
        run_restore(repo, restore_spec("sv-r", maria, {"snapshot": "b1"}, rename={src: dst}, if_exists="merge"), "r1")
    message = str(caught.value)
    assert f"{dst}.implicit: the snapshot holds every version" in message, message
    assert "is not system-versioned" in message and "ROW_START and ROW_END" in message, message
    assert current(maria, dst, "implicit") == [(9, "kept")]  # refused before any row


def test_rows_without_history_load_data_only_into_a_versioned_table(maria: Maria, repo: Repository) -> None:
    # The reverse: plain rows into an existing system-versioned table become its current rows
    # (their row start the load's time); the table's earlier versions go, as its rows do: a
    # restore replaces what the table holds.
    src, dst = maria.db("sv_plain"), maria.db("sv_dst")
    maria.execute(None, f"CREATE DATABASE `{src}`", f"CREATE DATABASE `{dst}`")
    maria.execute(
        src, "CREATE TABLE implicit (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO implicit VALUES (1, 'a'), (4, 'd')"
    )
    maria.execute(dst, HISTORY[0], *[e.format(t="implicit") for e in EDITS])
    run_backup(repo, backup_spec("sv", maria, databases=[src], data_only=[f"{src}.implicit"]), "b1")
    _, restored = run_restore(repo, restore_spec("sv-r", maria, {"snapshot": "b1"}, rename={src: dst}, if_exists="merge"), "r1")
    assert restored["rows"] == 2
    assert current(maria, dst, "implicit") == [(1, "a"), (4, "d")]
    history = versions(maria, dst, "implicit")
    assert [(i, v) for i, v, _, _ in history] == [(1, "a"), (4, "d")]
    assert all(end.year == 2106 or end.year == 2038 for _, _, _, end in history), history  # current, none ended

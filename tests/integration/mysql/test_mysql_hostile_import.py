"""`davit import sql` of a hostile script: an operator imports a dump someone handed them and
restores it with the admin account. What the script says about rows may only put rows into
the tables it creates: an INSERT naming another database's table (`mysql.global_priv` would
make a superuser), an INSERT ... SELECT or a subquery among the values (reading another
database with the admin's rights into the restored table), a CREATE TABLE of another
database's table (CREATE OR REPLACE TABLE drops it) or one filled by a SELECT: each is refused
at import, naming the script and the table, and nothing is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.mysql.importdump import import_sql
from davit.adapters.mysql.restore import MysqlRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from tests.fakes import MemoryRunContext
from tests.integration.mysql.helpers import SMALL, Maria, restore_spec, rows_of, run_restore

pytestmark = pytest.mark.mariadb


def hostile(db: str, victim: str, body: str) -> bytes:
    return (
        f"CREATE DATABASE `{db}`;\nUSE `{db}`;\n"
        f"CREATE TABLE `notes` (`id` int PRIMARY KEY, `body` text);\n"
        f"CREATE TABLE `{victim}` (`id` int);\n"  # a table named as the victim database
        f"INSERT INTO `notes` VALUES (1,'hello');\n{body}\n"
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        "INSERT INTO `{victim}`.`accounts` VALUES ('mallory');",
        "INSERT INTO `{victim}`.`accounts` SELECT 'mallory';",
        "INSERT INTO {victim}.accounts (name) VALUES ('mallory');",
    ],
    ids=["values", "select", "unquoted"],
)
def test_rows_for_another_databases_table_are_refused(maria: Maria, repo: Repository, tmp_path: Path, body: str) -> None:
    victim, db = maria.db("atk_victim"), maria.db("atk_hostile")
    maria.execute(None, f"CREATE DATABASE `{victim}`")
    maria.execute(victim, "CREATE TABLE accounts (name varchar(40))", "INSERT INTO accounts VALUES ('alice')")
    script = tmp_path / "handed.sql"
    script.write_bytes(hostile(db, victim, body.format(victim=victim)))
    with pytest.raises(PermanentError, match=f"{script}: table {victim}: ") as refused:
        import_sql(repo, script, "handed", "s1", SMALL, None)
    assert "only rows given as literal values are imported" in str(refused.value)
    assert repo.snapshots() == []
    assert rows_of(maria, victim, "accounts") == [("alice",)]


@pytest.mark.parametrize(
    "body",
    [
        "INSERT INTO `notes` VALUES (2,(SELECT GROUP_CONCAT(name) FROM `{victim}`.`accounts`));",
        "INSERT INTO `notes` (id, body) SELECT 2, name FROM `{victim}`.`accounts`;",
        "INSERT INTO `notes` VALUES (2, /*!LOAD_FILE('/etc/passwd')*/ 'x');",
        "INSERT INTO `notes` VALUES (2,'x') ON DUPLICATE KEY UPDATE body = USER();",
        # under it the server ends a string at a backslash-quote, where the import reads on
        "SET sql_mode = 'NO_BACKSLASH_ESCAPES';\nINSERT INTO `notes` VALUES (2,'a');",
    ],
    ids=["subquery", "insert-select", "executable-comment", "on-duplicate", "no-backslash-escapes"],
)
def test_rows_computed_by_the_server_are_refused(maria: Maria, repo: Repository, tmp_path: Path, body: str) -> None:
    victim, db = maria.db("atk_victim"), maria.db("atk_hostile")
    script = tmp_path / "handed.sql"
    script.write_bytes(hostile(db, victim, body.format(victim=victim)))
    refused = f"{script}: table notes: (only rows given as literal values|rows under an sql_mode)"
    with pytest.raises(PermanentError, match=refused):
        import_sql(repo, script, "handed", "s1", SMALL, None)
    assert repo.snapshots() == []


@pytest.mark.parametrize(
    "create",
    [
        "CREATE OR REPLACE TABLE `{victim}`.`accounts` (`id` int);",
        "CREATE TABLE `stolen` SELECT * FROM `{victim}`.`accounts`;",
        "CREATE TABLE `stolen` (`name` varchar(40)) AS SELECT name FROM `{victim}`.`accounts`;",
    ],
    ids=["other-database", "create-select", "create-as-select"],
)
def test_a_table_definition_that_reaches_outside_is_refused(maria: Maria, repo: Repository, tmp_path: Path, create: str) -> None:
    victim, db = maria.db("atk_victim"), maria.db("atk_hostile")
    maria.execute(None, f"CREATE DATABASE `{victim}`")
    maria.execute(victim, "CREATE TABLE accounts (name varchar(40))", "INSERT INTO accounts VALUES ('alice')")
    script = tmp_path / "handed.sql"
    script.write_bytes(hostile(db, victim, create.format(victim=victim)))
    with pytest.raises(PermanentError, match=f"{script}: table (`?{victim}`?|stolen): "):
        import_sql(repo, script, "handed", "s1", SMALL, None)
    assert repo.snapshots() == []
    assert rows_of(maria, victim, "accounts") == [("alice",)]


def test_a_dump_of_ordinary_literals_still_imports_and_restores(maria: Maria, repo: Repository, tmp_path: Path) -> None:
    """What mariadb-dump and mysqldump write for values: numbers, signs, exponents, NULL, quoted
    strings with escapes and doubled quotes, hex and bit literals, charset introducers."""
    db, copy = maria.db("atk_literals"), maria.db("atk_literals_restored")
    script = tmp_path / "dump.sql"
    script.write_bytes(
        f"CREATE DATABASE `{db}`;\nUSE `{db}`;\n"
        "CREATE TABLE `t` (`id` int PRIMARY KEY, `f` double, `s` text, `b` varbinary(8), `bits` bit(4), `n` int);\n"
        "INSERT INTO `t` (`id`, `f`, `s`, `b`, `bits`, `n`) VALUES (1,-1.5e-3,'it''s \\'q\\' ; (x)',0x0aff,b'101',NULL),"
        "(2,+2,_utf8mb4'caf\u00e9',_binary 'ab',b'1',-7),\n(3,.5,'SELECT 1 FROM dual','',0x0,DEFAULT);\n"
        "INSERT IGNORE INTO t VALUES (4,1E3,'x',X'41',B'11',4);\n"
        "REPLACE INTO `t` VALUE (5,0,'y',0b1,1,5);\n".encode()
    )
    info = import_sql(repo, script, "dump", "s1", SMALL, None)
    assert info.stats["rows"] == 5
    run_restore(repo, restore_spec("back", maria, {"job": "dump"}, rename={db: copy}), "r1")
    rows = rows_of(maria, copy, "t")
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][2:4] == ("it's 'q' ; (x)", b"\n\xff") and rows[1][2] == "caf\u00e9" and rows[2][2] == "SELECT 1 FROM dual"


def test_the_servers_own_databases_in_a_script_are_left_out(maria: Maria, repo: Repository, tmp_path: Path) -> None:
    """`mariadb-dump --all-databases` writes the `mysql` database (accounts, password hashes,
    grants): imported, a restore with if_exists = 'drop' would drop the target server's own
    `mysql` database and load the script's accounts in its place. The import leaves the
    server's own databases out and says so; accounts go through `users = true`."""
    db = maria.db("atk_app")
    script = tmp_path / "all.sql"
    script.write_bytes(
        b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `mysql`;\nUSE `mysql`;\n"
        b"CREATE TABLE `global_priv` (`Host` char(255) NOT NULL, `User` char(128) NOT NULL, `Priv` longtext);\n"
        b"INSERT INTO `global_priv` VALUES ('%','mallory','{\"access\":18446744073709551615}');\n"
        b"CREATE DATABASE `sys`;\nUSE `sys`;\nCREATE TABLE `t` (`a` int);\n"
        + f"CREATE DATABASE `{db}`;\nUSE `{db}`;\nCREATE TABLE `t` (`id` int);\nINSERT INTO `t` VALUES (1);\n".encode()
    )
    info = import_sql(repo, script, "all", "s1", SMALL, None)
    assert info.source["databases"] == [db]
    assert info.source["left_out"] == ["mysql", "sys"]
    assert info.stats["tables"] == 1 and info.stats["rows"] == 1


def test_a_restore_into_the_servers_own_database_is_refused(maria: Maria, repo: Repository, tmp_path: Path) -> None:
    """Renaming a snapshot's database to `mysql` (or restoring a backup that named it) with
    if_exists = 'drop' would drop the server's accounts: refused at prepare, naming it."""
    db = maria.db("atk_app")
    script = tmp_path / "app.sql"
    script.write_bytes(f"CREATE DATABASE `{db}`;\nUSE `{db}`;\nCREATE TABLE `t` (`id` int);\n".encode())
    import_sql(repo, script, "app", "s1", SMALL, None)
    for target in ("mysql", "sys", "performance_schema", "information_schema"):
        spec = restore_spec("back", maria, {"job": "app"}, rename={db: target}, if_exists="drop")
        work = MysqlRestoreWork(RunInputs(spec, "r1", SMALL, repo=repo))
        with pytest.raises(PermanentError, match=f"database {target} is the server's own"):
            work.prepare(MemoryRunContext(run_id="r1"))  # (only prepare: a run would drop it on a server without the check)

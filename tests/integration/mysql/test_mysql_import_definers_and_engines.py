"""`davit import sql` of a script someone handed over: a table whose definition reaches files or
servers outside the server's own tables (ENGINE=CONNECT reading /etc/passwd, FEDERATED,
SPIDER, CONNECTION=, DATA/INDEX DIRECTORY, on the table or a partition) is refused naming the
script and the table, nothing published; views, routines and triggers are kept WITHOUT their
DEFINER (`DEFINER=root@localhost`, as mariadb-dump writes it inside executable comments), so the
restore creates them as the restoring account and the script cannot choose whom they run as."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.mysql.importdump import import_sql
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError
from tests.integration.mysql.helpers import SMALL, Maria, restore_spec, run_restore

pytestmark = pytest.mark.mariadb

OUTSIDE = {
    "connect-file": "CREATE TABLE `t` (`line` varchar(500)) ENGINE=CONNECT TABLE_TYPE=DOS FILE_NAME='/etc/passwd';",
    "connect-no-equals": "CREATE TABLE `t` (`line` varchar(500)) ENGINE CONNECT TABLE_TYPE=DOS FILE_NAME='/etc/shadow';",
    "federated": "CREATE TABLE `t` (`id` int) ENGINE=FEDERATED CONNECTION='mysql://u:p@10.0.0.1:3306/db/t';",
    "spider": 'CREATE TABLE `t` (`id` int) ENGINE=SPIDER COMMENT=\'wrapper "mysql", host "10.0.0.1"\';',
    "data-directory": "CREATE TABLE `t` (`id` int) ENGINE=InnoDB DATA DIRECTORY='/var/lib/mysql-other';",
    "index-directory": "CREATE TABLE `t` (`id` int) ENGINE=MyISAM INDEX DIRECTORY = '/tmp';",
    "partition-directory": "CREATE TABLE `t` (`id` int) PARTITION BY HASH (id) (PARTITION p0 DATA DIRECTORY = '/tmp/p0');",
}


@pytest.mark.parametrize("create", OUTSIDE.values(), ids=OUTSIDE.keys())
def test_a_table_reaching_outside_the_servers_own_tables_is_refused(repo: Repository, tmp_path: Path, create: str) -> None:
    script = tmp_path / "handed.sql"
    script.write_bytes(f"CREATE DATABASE `handed`;\nUSE `handed`;\n{create}\n".encode())
    with pytest.raises(PermanentError, match=f"{script}: table t: .* reaches files or servers outside"):
        import_sql(repo, script, "handed", "s1", SMALL, None)
    assert repo.snapshots() == []


def test_words_in_quoted_names_and_comments_are_not_options(maria: Maria, repo: Repository, tmp_path: Path) -> None:
    script = tmp_path / "handed.sql"
    script.write_bytes(
        b"CREATE DATABASE `handed`;\nUSE `handed`;\n"
        b"CREATE TABLE `t` (`data directory` int, `engine=connect` int) ENGINE=InnoDB COMMENT='ENGINE=CONNECT';\n"
    )
    import_sql(repo, script, "handed", "s1", SMALL, None)
    assert [s.id for s in repo.snapshots()] == ["s1"]


def test_objects_of_a_script_are_created_as_the_restoring_account(maria: Maria, repo: Repository, tmp_path: Path) -> None:
    db = maria.db("handed")
    script = tmp_path / "handed.sql"
    script.write_bytes(
        f"CREATE DATABASE `{db}`;\nUSE `{db}`;\n"
        "CREATE TABLE `t` (`id` int PRIMARY KEY);\nINSERT INTO `t` VALUES (1),(2);\n"
        "/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
        "/*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */;\n"
        "DELIMITER ;;\n"
        "CREATE DEFINER=`root`@`localhost` FUNCTION `twice`(x INT) RETURNS int DETERMINISTIC RETURN x * 2 ;;\n"
        "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `stamp` BEFORE INSERT ON `t` "
        "FOR EACH ROW SET NEW.id = NEW.id */;;\nDELIMITER ;\n".encode()
    )
    import_sql(repo, script, "handed", "s1", SMALL, None)
    copy = maria.db("copy")
    run_restore(repo, restore_spec("r", maria, {"snapshot": "s1"}, rename={db: copy}), "r1")

    conn = maria.connect(copy)
    try:
        with conn.cursor() as cur:
            admin = f"{maria.peer.user}@%"
            for table, column in (("VIEWS", "TABLE_SCHEMA"), ("ROUTINES", "ROUTINE_SCHEMA"), ("TRIGGERS", "TRIGGER_SCHEMA")):
                cur.execute(f"SELECT DEFINER FROM information_schema.{table} WHERE {column} = %s", (copy,))
                assert cur.fetchall() == ((admin,),), table
            cur.execute("SELECT id, twice(id) FROM v ORDER BY id")
            assert cur.fetchall() == ((1, 2), (2, 4))
    finally:
        conn.close()

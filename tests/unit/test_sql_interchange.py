"""Pure pieces of the SQL interchange commands: a mariadb-dump script cut into statements as
the `mariadb` client cuts it, rows counted in an extended INSERT, carriage returns escaped
only in the values, and a MariaDB tree line that stays as it was unless imported."""

from __future__ import annotations

import io

import pytest

from davit.adapters.mysql.importdump import count_rows, effective, statements
from davit.adapters.mysql.layout import TableEntry, read_tree, tree_zst
from davit.adapters.mysql.pieces import ValueTooLarge
from davit.adapters.mysql.script import _cr_escaped, script
from davit.domain.errors import PermanentError

SCRIPT = b"""-- MariaDB dump
/*!40101 SET NAMES utf8mb4 */;
INSERT INTO `t` VALUES (1,'a;\\nb'),(2,'it''s (not) a tuple');
DELIMITER ;;
CREATE PROCEDURE p() BEGIN SELECT ';'; SELECT 2; END ;;
DELIMITER ;
CREATE VIEW v AS SELECT 'x;
y' AS z;
"""


def test_a_script_is_cut_at_its_delimiters_outside_quotes() -> None:
    found = list(statements(io.BytesIO(SCRIPT), "dump.sql"))
    assert found == [
        b"/*!40101 SET NAMES utf8mb4 */",
        b"INSERT INTO `t` VALUES (1,'a;\\nb'),(2,'it''s (not) a tuple')",
        b"CREATE PROCEDURE p() BEGIN SELECT ';'; SELECT 2; END",
        b"CREATE VIEW v AS SELECT 'x;\ny' AS z",
    ]


def test_a_script_that_ends_inside_a_statement_is_refused_naming_the_file() -> None:
    with pytest.raises(PermanentError, match=r"dump\.sql: the script ends inside a statement"):
        list(statements(io.BytesIO(b"CREATE TABLE t (\n  id int\n"), "dump.sql"))


def test_rows_of_an_extended_insert_are_its_top_level_tuples() -> None:
    assert count_rows(b"INSERT INTO `VALUES (x)` VALUES (1,'(',POINT(1,2)),(2,'\\')'),(3,NULL)") == 3
    assert count_rows(b"INSERT INTO t (a) VALUES\n(1)") == 1


def test_executable_comments_are_read_as_the_server_reads_them() -> None:
    text = "/*!50003 CREATE*/ /*!50017 DEFINER=`u`@`%`*/ /*!50003 TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET @a = 1 */"
    assert effective(text) == "CREATE DEFINER=`u`@`%` TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET @a = 1"


def test_carriage_returns_are_escaped_in_values_not_in_names() -> None:
    statement = b"INSERT INTO `a\rb` (`c`) VALUES\n('x\r\ny');\n"
    assert _cr_escaped(statement) == b"INSERT INTO `a\rb` (`c`) VALUES\n('x\\r\ny');\n"


def test_a_backed_up_table_line_has_no_load_mode_and_an_imported_one_keeps_it() -> None:
    backed_up = TableEntry("db", "t", "CREATE TABLE t (id int)", "InnoDB", ["id"], rows=1, size=3, chunks=["ab" * 32])
    imported = TableEntry("db", "u", None, "", [], load_mode="NO_AUTO_VALUE_ON_ZERO")
    assert "load_mode" not in backed_up.to_dict()
    read = list(read_tree(tree_zst([backed_up, imported])))
    assert read == [backed_up, imported]


def test_a_script_that_sets_the_clients_charset_to_utf8_is_cut_as_before() -> None:
    found = list(statements(io.BytesIO(b"\\C utf8mb4\n-- davit export\nSET NAMES utf8mb4;\n"), "export.sql"))
    assert found == [b"SET NAMES utf8mb4"]


def test_a_script_in_another_client_charset_is_refused_naming_the_line() -> None:
    with pytest.raises(PermanentError, match=r"sjis\.sql: line 2: .*character set 'sjis'"):
        list(statements(io.BytesIO(b"SET NAMES utf8mb4;\n\\C sjis\nSELECT 1;\n"), "sjis.sql"))


def _exported(statement: bytes, packet: int) -> bytes:
    table = TableEntry("db", "t", "CREATE TABLE t (id int, b blob)", "InnoDB", ["id", "b"], rows=3, size=1, chunks=["ab" * 32])
    return b"".join(script([table], lambda _id: statement, {}, "heading", packet))


def test_an_insert_over_the_packet_is_written_in_statements_under_it_each_ended() -> None:
    big = b"0x" + b"61" * 40_000
    statement = b"INSERT INTO `t` VALUES (1,0x00),(2," + big + b"),(3,'x');\n"
    text = _exported(statement, 1 << 16)
    assert statement not in text  # before: the INSERT was written whole, over the packet
    rows = text[text.index(b"-- rows of db.t") :]
    parts = rows.split(b";\n")
    assert max(len(p) for p in parts) < 1 << 16
    assert b"INSERT INTO `t` VALUES\n(1,0x00);\n" in rows and b"INSERT INTO `t` VALUES\n(3,'x');\n" in rows
    assert b"SET @davit_v0 = CONCAT(X'6161" in rows and b"(2,@davit_v0);\n" in rows
    guard = rows.index(b"IF @davit_v0 IS NULL THEN SIGNAL SQLSTATE '45000'")
    assert rows.index(b"SET @davit_v0 = CONCAT(") < guard < rows.index(b"(2,@davit_v0)")  # checked before the INSERT
    assert b"SET @davit_v0 = NULL;\n" in rows


def test_an_insert_under_the_packet_is_written_as_it_is() -> None:
    statement = b"INSERT INTO `t` VALUES (1,0x00),(2,'x');\n"
    assert statement in _exported(statement, 1 << 16)


def test_a_value_over_the_packet_refuses_the_export_naming_the_table_and_the_option() -> None:
    statement = b"INSERT INTO `t` VALUES (1,0x" + b"61" * 70_000 + b");\n"
    with pytest.raises(ValueTooLarge, match=r"db\.t: .*column 2.* export again with --max-allowed-packet 65536"):
        _exported(statement, 1 << 16)

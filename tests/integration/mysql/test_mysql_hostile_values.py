"""A database owner's hostile values come back from a backup byte for byte and never run as SQL:
multi-byte characters whose last byte is a backslash (GBK, Big5, Shift-JIS, CP932: the classic
escaping injection), every latin1 byte, binary-charset ENUM/SET values holding bytes that are
not UTF-8, BIT(64), NUL, Ctrl-Z, quotes and backslashes next to each other."""

from __future__ import annotations

import pytest

from davit.adapters.mysql import cdriver
from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, contents, restore_spec, run_backup, run_restore

pytestmark = pytest.mark.mariadb

# After each character whose last byte is 0x5C: a quote, then SQL that must stay text.
INJECTION = "27204f5220313d313b2044524f50205441424c4520766963746976653b202d2d20"  # ' OR 1=1; DROP TABLE victim; --
HOSTILE = [
    "CREATE TABLE victim (id INT PRIMARY KEY)",
    "INSERT INTO victim VALUES (1)",
    "CREATE TABLE mb (id INT PRIMARY KEY, g VARCHAR(60) CHARACTER SET gbk, b VARCHAR(60) CHARACTER SET big5, "
    "s VARCHAR(60) CHARACTER SET sjis, c VARCHAR(60) CHARACTER SET cp932, l VARBINARY(300), t TEXT CHARACTER SET latin1)",
    f"INSERT INTO mb VALUES (1, _gbk 0x815c{INJECTION}, _big5 0xb35c{INJECTION}, _sjis 0x955c{INJECTION}, "
    f"_cp932 0x835c{INJECTION}, 0x5c{INJECTION}, _latin1 0x{''.join(f'{b:02x}' for b in range(256))})",
    "INSERT INTO mb VALUES (2, _gbk 0x815c5c, _big5 0xb35c5c27, _sjis 0x955c00, _cp932 0x835c1a, 0x00ff5c27, "
    "_latin1 0x5c5c27275c)",
    "CREATE TABLE enums (id INT PRIMARY KEY, e ENUM('a', 'b\\\\''') CHARACTER SET binary, "
    "s SET('x', 'y\\\\') CHARACTER SET binary, bits BIT(64))",
    "INSERT INTO enums VALUES (1, 'b\\\\''', 'x,y\\\\', b'1111111111111111111111111111111111111111111111111111111111111111')",
    "INSERT INTO enums VALUES (2, 'a', '', 0)",
]


@pytest.mark.parametrize("c_driver", [True, False], ids=["mysqlclient", "pymysql"])
def test_hostile_values_come_back_byte_for_byte_and_run_nothing(
    maria: Maria, repo: Repository, monkeypatch: pytest.MonkeyPatch, c_driver: bool
) -> None:
    if c_driver and cdriver.MySQLdb is None:
        pytest.skip("mysqlclient is not installed")
    monkeypatch.setattr(cdriver, "PREFER_C", c_driver)
    src, dst = maria.db("atk_src"), maria.db("atk_dst")
    maria.execute(None, f"CREATE DATABASE `{src}` CHARACTER SET utf8mb4")
    maria.execute(src, *HOSTILE)
    run_backup(repo, backup_spec("atk", maria, databases=[src]), "b1")
    run_restore(repo, restore_spec("atk-r", maria, {"snapshot": "b1"}, rename={src: dst}), "r1")
    original, copy = contents(maria, src), contents(maria, dst)
    assert original["rows victim"] == [("1",)] and copy["rows victim"] == [("1",)]
    assert sorted(copy) == sorted(original)
    for key in original:
        assert copy[key] == original[key], key


# One row whose INSERT (about 47 MiB: hex doubles the blob and the geometry) is far over the
# server's 16 MiB max_allowed_packet, each value under it: a 9 MiB blob of NUL, quote and
# backslash bytes, 9 MiB of text of 1- to 4-byte characters, quotes and backslashes, and a
# 9.6 MiB LINESTRING (built on the server from its WKB), between two small rows.
BIG_ROW = [
    "CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB, x LONGTEXT CHARACTER SET utf8mb4, g GEOMETRY)",
    "INSERT INTO t VALUES (1, 0x00, 'a', NULL)",
    "INSERT INTO t VALUES (2, REPEAT(0xab00275c, 9 << 18), REPEAT(_utf8mb4 'é\\'\\\\€😀x', (9 << 20) DIV 12), "
    "ST_GeomFromWKB(CONCAT(0x0102000000, REVERSE(UNHEX(LPAD(HEX(600000), 8, '0'))), "
    "REPEAT(0x000000000000f03f0000000000000040, 600000))))",
    "INSERT INTO t VALUES (3, NULL, '', POINT(1, 2))",
]
DIGESTS = "SELECT id, MD5(b), LENGTH(b), MD5(x), CHAR_LENGTH(x), MD5(ST_AsWKB(g)), ST_NumPoints(g) FROM t ORDER BY id"


def _digests(maria: Maria, db: str) -> list[tuple[object, ...]]:
    with maria.connect(db) as conn, conn.cursor() as cur:
        cur.execute(DIGESTS)
        return list(cur.fetchall())


def test_a_row_over_the_targets_packet_is_restored_in_pieces_under_it(maria: Maria, repo: Repository) -> None:
    # Before: the backup warned that a server set like its own could not take the row, and the
    # restore failed naming the table and the max_allowed_packet it needed.
    src, dst = maria.db("atk_huge"), maria.db("atk_huge_r")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, *BIG_ROW)
    before = _digests(maria, src)
    assert before[1][2] == 9 << 20 and before[1][4] == 6 * ((9 << 20) // 12) and before[1][6] == 600000, before[1]
    ctx, _ = run_backup(repo, backup_spec("atk", maria, databases=[src]), "b1")
    assert not [w for w in ctx.warnings if "max_allowed_packet" in w], ctx.warnings
    _, restored = run_restore(repo, restore_spec("atk-r", maria, {"snapshot": "b1"}, rename={src: dst}), "r1")
    assert restored["rows"] == 3
    assert _digests(maria, dst) == before

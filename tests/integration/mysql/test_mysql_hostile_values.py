"""A database owner's hostile values come back from a backup byte for byte and never run as SQL:
multi-byte characters whose last byte is a backslash (GBK, Big5, Shift-JIS, CP932: the classic
escaping injection), every latin1 byte, binary-charset ENUM/SET values holding bytes that are
not UTF-8, BIT(64), NUL, Ctrl-Z, quotes and backslashes next to each other."""

from __future__ import annotations

import pytest

from davit.adapters.mysql import cdriver
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError, RetryableError
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


def test_a_row_too_big_to_restore_into_a_server_like_its_own_is_warned_of_at_backup(maria: Maria, repo: Repository) -> None:
    # 9 MiB fits the server's 16 MiB max_allowed_packet; its hex literal (18 MiB) does not: the
    # restore into a server set alike is refused. The backup says so, naming table and size.
    src = maria.db("atk_huge")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, "CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)", "INSERT INTO t VALUES (1, REPEAT(0xab, 9 << 20))")
    ctx, _ = run_backup(repo, backup_spec("atk", maria, databases=[src]), "b1")
    warned = [w for w in ctx.warnings if "max_allowed_packet" in w]
    assert len(warned) == 1 and f"{src}.t: a row is a 1887" in warned[0], ctx.warnings


def test_a_row_larger_than_the_targets_packet_fails_the_restore_at_once_saying_what_to_set(
    maria: Maria, repo: Repository
) -> None:
    # The server would refuse the 18 MiB statement with error 1153 or hang up while it arrives
    # (a lost connection, which reads as retryable): the restore refuses it before sending,
    # as a permanent failure naming the table and the max_allowed_packet it needs.
    src, dst = maria.db("atk_huge"), maria.db("atk_huge_r")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, "CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)", "INSERT INTO t VALUES (1, REPEAT(0xab, 9 << 20))")
    run_backup(repo, backup_spec("atk", maria, databases=[src]), "b1")
    with pytest.raises(PermanentError) as caught:
        run_restore(repo, restore_spec("atk-r", maria, {"snapshot": "b1"}, rename={src: dst}), "r1")
    assert not isinstance(caught.value, RetryableError)
    message = str(caught.value)
    assert f"{dst}.t: a row of the snapshot is a 1887" in message
    assert "set max_allowed_packet to at least 18875392" in message, message
    assert maria.peer.password not in message
    with maria.connect(dst) as conn, conn.cursor() as cur:  # the table's transaction was rolled back
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 0

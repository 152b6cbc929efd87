"""`davit export sql` replayed by a `mariadb` client whose default character set is a
multi-byte one with 0x5C ('\\') as a trail byte (sjis, cp932, gbk, big5): the client splits the
script into statements with its own character set, so a UTF-8 sequence it reads as one of its
two-byte characters could swallow the backslash before a quote and end the string early, the
rest of the value then read as SQL. The script sets its own character set for the client too,
so the values come back byte for byte and nothing in them runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, contents, run_backup
from tests.integration.mysql.test_mysql_sql_export import davit

pytestmark = pytest.mark.mariadb

# U+0101 is C4 81 in UTF-8: a client in sjis reads 81 5C as one character; U+8868 is E8 A1 A8:
# one in gbk reads E8 A1, then A8 5C. Each followed by an escaped backslash and quote
# (5C 5C 5C 27) would end the string there, and the DROP after it would be SQL.
ESCAPES = ["\u0101\\'; DROP TABLE victim; -- ", "\u8868\\'; DROP TABLE victim; -- "]
VALUES = [
    "CREATE TABLE victim (id INT PRIMARY KEY)",
    "INSERT INTO victim VALUES (1)",
    "CREATE TABLE notes (id INT PRIMARY KEY, u TEXT CHARACTER SET utf8mb4, s VARCHAR(60) CHARACTER SET sjis, "
    "g VARCHAR(60) CHARACTER SET gbk)",
    *(
        f"INSERT INTO notes VALUES ({i}, '{e.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}', "
        "_sjis 0x955c5c27, _gbk 0x815c27)"
        for i, e in enumerate(ESCAPES, 1)
    ),
    "INSERT INTO notes VALUES (3, 'x\u8868\\\\y', _sjis 0x835c3b, _gbk 0x815c5c)",
    "CREATE TABLE `\u8868` (`\u0101` INT PRIMARY KEY)",  # names whose last byte a client could pair with the backquote
    "INSERT INTO `\u8868` VALUES (7)",
]


def replay_as(maria: Maria, tmp_path: Path, script: bytes, charset: str) -> subprocess.CompletedProcess[bytes]:
    options = tmp_path / "client.cnf"
    if not options.exists():
        fd = os.open(options, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            p = maria.peer
            fh.write(f"[client]\nhost={p.host}\nport={p.port}\nuser={p.user}\npassword={p.password}\n")
    mariadb = shutil.which("mariadb") or "mysql"
    argv = [mariadb, f"--defaults-extra-file={options}", f"--default-character-set={charset}"]
    return subprocess.run(argv, input=script, capture_output=True, timeout=300)


@pytest.mark.parametrize("charset", ["sjis", "gbk"])
def test_a_script_replayed_by_a_client_in_a_backslash_trail_charset_keeps_every_value(
    maria: Maria, tmp_path: Path, charset: str
) -> None:
    src, copy = maria.db("sqlx_mb"), maria.db(f"sqlx_mb_{charset}")
    maria.execute(None, f"CREATE DATABASE `{src}` CHARACTER SET utf8mb4")
    maria.execute(src, *VALUES)
    original = contents(maria, src)
    assert [r[1] for r in original["rows notes"][:2]] == ESCAPES
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("mb", maria, databases=[src]), "b1")
    out = tmp_path / "mb.sql"
    davit(home, "export", "sql", "b1", str(out), "--rename", f"{src}={copy}")

    done = replay_as(maria, tmp_path, out.read_bytes(), charset)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    replayed = contents(maria, copy)
    assert replayed["rows victim"] == [("1",)]
    for key in original:
        assert replayed[key] == original[key], key

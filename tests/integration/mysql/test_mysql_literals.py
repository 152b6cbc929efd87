"""The literals a backup writes for each value, built by davit from the server's plain values,
are byte for byte those the server's QUOTE/HEX/BIN wrote when davit asked it to build them
(the format of every earlier snapshot): a backup after the change deduplicates against the
ones before it, and every awkward value (BLOB, JSON, DECIMAL(65,30), DATETIME(6), BIT,
spatial, 4-byte UTF-8, latin1, zero dates, NUL/CR/LF/Ctrl-Z, quotes, backslashes, NULL vs '')
is written as before, through either driver."""

from __future__ import annotations

import pytest

from davit.adapters.mysql import cdriver, schema
from davit.adapters.mysql.backup import MysqlBackupWork
from davit.adapters.mysql.client import Server, quote_name
from davit.adapters.mysql.literals import BINARY_TYPES, SPATIAL_TYPES
from tests.integration.mysql.helpers import Maria, backup_spec
from tests.integration.mysql.test_mysql_roundtrip import make_fidelity_db

pytestmark = pytest.mark.mariadb

MORE_ROWS = [
    "CREATE TABLE texts (id INT PRIMARY KEY, a VARCHAR(40) CHARACTER SET latin1, b TEXT, c CHAR(3), n INT)",
    "INSERT INTO texts VALUES (1, 'ÿ þ ý', 'tab\there \"dq\" \\\\n not a newline', 'x', NULL), (2, NULL, NULL, NULL, NULL)",
    "INSERT INTO texts VALUES (3, '', '', '', 0), (4, '\\'', '\\\\', ' ', -1)",
]


def server_literal(name: str, data_type: str, has_charset: bool) -> str:
    """What davit asked the server for before (the reference)."""
    col = quote_name(name)
    if data_type == "bit":
        return f"IF({col} IS NULL, 'NULL', CONCAT('b''', BIN({col}), ''''))"
    if not has_charset and (data_type in BINARY_TYPES or data_type in SPATIAL_TYPES):
        return f"IF({col} IS NULL, 'NULL', IF(OCTET_LENGTH({col}) = 0, 'X''''', CONCAT('0x', LOWER(HEX({col})))))"
    return f"QUOTE(CONVERT({col} USING utf8mb4))"


def rows_both_ways(server: Server, db: str, table: str) -> tuple[list[bytes], list[bytes]]:
    conn = server.connect(rows=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"USE {quote_name(db)}")
            columns = schema.columns(cur, db, table)
            order = schema.order_by(cur, db, table, [c[0] for c in columns])
            parts = ", ',', ".join(server_literal(*c) for c in columns)
            keys = ",".join(quote_name(c) for c in order)
            cur.execute(f"SELECT CAST(CONCAT('(', {parts}, ')') AS BINARY) FROM {quote_name(table)} ORDER BY {keys}")
            reference = [bytes(r[0]) for r in cur.fetchall()]
        built = [row for batch in MysqlBackupWork._batches(conn, table, columns, order) for row in batch]
    finally:
        conn.close()
    return reference, built


@pytest.mark.parametrize("c_driver", [True, False], ids=["mysqlclient", "pymysql"])
def test_every_awkward_value_is_written_as_the_server_wrote_it(
    maria: Maria, monkeypatch: pytest.MonkeyPatch, c_driver: bool
) -> None:
    if c_driver and cdriver.MySQLdb is None:
        pytest.skip("mysqlclient is not installed")
    monkeypatch.setattr(cdriver, "PREFER_C", c_driver)
    shop = maria.db("shop")
    make_fidelity_db(maria, shop)
    maria.execute(shop, *MORE_ROWS)
    server = Server(backup_spec("lit", maria, databases=[shop]).source, "test")
    for table in ("everything", "texts", "no_key", "odd name `quoted`", "many", "parent"):
        reference, built = rows_both_ways(server, shop, table)
        assert reference, table
        assert built == reference, table

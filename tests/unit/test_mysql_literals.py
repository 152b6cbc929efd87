"""The literals a MariaDB/MySQL backup writes for each value, built by davit: the batch way
(most tables: a few calls over a thousand rows) and the value-by-value way must give the same
bytes whatever the values hold, the escapes are QUOTE's, and NULL never reads as ''."""

from __future__ import annotations

from davit.adapters.mysql import literals
from davit.adapters.mysql.literals import BIT, HEX, TEXT, Rows


def test_text_is_quoted_as_the_servers_quote_does() -> None:
    assert literals.quote(b'it\'s a \\ "x"\n\r\x00\x1a') == b"'it\\'s a \\\\ \"x\"\n\r\\0\\Z'"
    assert literals.quote(b"") == b"''"  # the empty string, never NULL
    assert literals.quote("h\U0001f600".encode()) == b"'h\xf0\x9f\x98\x80'"


def test_bytes_become_hex_bits_become_binary_and_null_stays_null() -> None:
    assert literals.hex_literal(b"\x00\x01\xff") == b"0x0001ff"
    assert literals.hex_literal(b"") == b"X''"  # an empty BLOB, not NULL
    assert literals.bit_literal(b"\x10\x05") == b"b'1000000000101'"
    assert literals.bit_literal(b"\x00\x00") == b"b'0'"
    assert literals.literal(TEXT, None) == literals.literal(HEX, None) == b"NULL"


def test_a_columns_kind_comes_from_its_type_and_character_set() -> None:
    assert literals.kind("blob", False) == literals.kind("point", False) == literals.kind("varbinary", False) == HEX
    assert literals.kind("longtext", True) == literals.kind("varchar", True) == literals.kind("int", False) == TEXT
    assert literals.kind("bit", False) == BIT


def test_a_batch_of_text_rows_reads_as_the_same_rows_built_one_value_at_a_time() -> None:
    batch = [
        (b"1", b"plain", b"", None),
        (b"2", None, None, None),
        (b"3", b"quote ' back \\ nul \x00 ctrl-z \x1a", b"caf\xc3\xa9 \xf0\x9f\x98\x80", b"'"),
        (b"4", b"','", b"('", b"NULL"),
    ]
    fast, slow = Rows([TEXT] * 4, raw=True), Rows([TEXT] * 4, raw=False)
    assert fast.fast and not slow.fast
    built = fast(batch)
    assert built == slow(batch) == [slow.row(r) for r in batch]
    assert built[1] == b"('2',NULL,NULL,NULL)"
    assert built[0] == b"('1','plain','',NULL)"


def test_a_batch_whose_values_hold_a_separator_byte_is_built_value_by_value_alike() -> None:
    # not UTF-8, so never the server's text; still written exactly if it ever comes
    batch = [(b"1", b"a\xffb"), (b"2", b"\xfe"), (b"3", b"\xfd"), (b"4", None)]
    rows = Rows([TEXT, TEXT], raw=True)
    assert rows._text_batch(batch) is None
    assert rows(batch) == [b"('1','a\xffb')", b"('2','\xfe')", b"('3','\xfd')", b"('4',NULL)"]


def test_pymysql_values_as_str_give_the_same_literals() -> None:
    rows = Rows([TEXT, HEX, BIT, TEXT], raw=False)
    assert rows([("-42", b"\x00\xfe", b"\x01\x01", "caf\u00e9 'x'")]) == [b"('-42',0x00fe,b'100000001','caf\xc3\xa9 \\'x\\'')"]
    assert rows([(None, b"", b"\x00", "")]) == [b"(NULL,X'',b'0','')"]

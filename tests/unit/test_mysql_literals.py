"""The literals a MariaDB/MySQL backup writes for each value, built in davit from the server's
plain values: the C driver's way (libmariadb's escaping, called by mysqlclient) and PyMySQL's
way (Python) must give the same bytes, or a backup after installing mysqlclient would store
every table again, and each must read back as the very value."""

from __future__ import annotations

import os

import pytest
from pymysql.constants import FIELD_TYPE

from davit.adapters.mysql import literals


def c_driver() -> object:
    if literals._mysql is None:
        why = "mysqlclient is not installed (README, MariaDB/MySQL)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return literals._mysql


def test_every_character_is_escaped_as_libmariadb_escapes_it() -> None:
    c = c_driver()
    awkward = "".join(chr(i) for i in range(256)) + "h\U0001f600llo 'quoted' \"double\" back\\slash \u00e9\x1a\x00"
    assert literals.quote(awkward) == c.string_literal(awkward.encode())  # type: ignore[attr-defined]
    for ch in awkward:
        assert literals.quote(ch) == c.string_literal(ch.encode()), repr(ch)  # type: ignore[attr-defined]


def test_the_special_characters_become_backslash_escapes_inside_single_quotes() -> None:
    assert literals.quote('it\'s a \\ "x"\n\r\x00\x1a') == b"'it\\'s a \\\\ \\\"x\\\"\\n\\r\\0\\Z'"
    assert literals.quote("") == b"''"  # the empty string, never NULL


def test_bytes_become_hex_bits_become_binary_and_null_stays_null() -> None:
    assert literals.hex_literal(b"\x00\x01\xff") == b"0x0001ff"
    assert literals.hex_literal(b"") == b"X''"  # an empty BLOB, not NULL
    assert literals.bit_literal(b"\x10\x05") == b"b'1000000000101'"
    assert literals.bit_literal(b"\x00\x00") == b"b'0'"
    assert literals.row_text([b"1", None, b"''"]) == b"(1,NULL,'')"


def test_pymysql_rows_give_the_same_literals_as_the_c_driver_would() -> None:
    description = [
        ("id", FIELD_TYPE.LONGLONG),
        ("name", FIELD_TYPE.VAR_STRING),
        ("blob", FIELD_TYPE.BLOB),
        ("bits", FIELD_TYPE.BIT),
        ("price", FIELD_TYPE.NEWDECIMAL),
        ("at", FIELD_TYPE.DATETIME),
    ]
    make = literals.py_row(description)
    row = ("-42", "caf\u00e9 'x'", b"\x00\xfe", b"\x01\x01", "-0.000000000000000000000000000001", "0000-00-00 00:00:00")
    assert make(row) == (
        b"(-42,'caf\xc3\xa9 \\'x\\'',0x00fe,b'100000001','-0.000000000000000000000000000001','0000-00-00 00:00:00')"
    )
    assert make((None, "", b"", None, None, None)) == b"(NULL,'',X'',NULL,NULL,NULL)"

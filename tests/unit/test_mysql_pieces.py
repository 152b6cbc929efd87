"""An INSERT over the target's max_allowed_packet is sent as statements under it that build the
same rows: fewer rows per INSERT, and a row too large alone with its largest values built in
user variables from pieces of their literals, never cut inside a UTF-8 character or an escape.
The server's side is played here by an interpreter of the few statements `split` writes (the
integration test, tests/integration/mysql/test_mysql_hostile_values.py, runs them on MariaDB)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from davit.adapters.mysql import pieces
from davit.adapters.mysql.literals import hex_literal, quote
from davit.adapters.mysql.pieces import ValueTooLarge, parse, split

HEAD = b"INSERT INTO `t` (`id`,`b`) VALUES\n"
_UNESCAPE = {b"0": b"\0", b"Z": b"\x1a", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b"}


def unquote(literal: bytes) -> bytes:
    """A quoted string literal's bytes, as the server reads it."""
    m = re.fullmatch(rb"(?:_\w+\s*)?'(.*)'", literal, re.S)
    assert m, literal
    out, body, i = bytearray(), m.group(1), 0
    while i < len(body):
        c = body[i : i + 1]
        if c == b"\\":
            nxt = body[i + 1 : i + 2]
            out += _UNESCAPE.get(nxt, nxt)
            i += 2
        elif c == b"'":
            assert body[i + 1 : i + 2] == b"'", body[i : i + 10]
            out += b"'"
            i += 2
        else:
            out += c
            i += 1
    return bytes(out)


def value(literal: bytes) -> bytes:
    if literal.startswith((b"X'", b"0x")):
        return bytes.fromhex(literal[2:].strip(b"'").decode())
    if literal == b"NULL" or literal.isdigit():
        return literal
    return unquote(literal)


def play(statements: list[bytes], packet: int) -> list[list[bytes]]:
    """What the rows would be after the server ran `statements` (each checked under `packet`)."""
    variables: dict[bytes, bytes] = {}
    rows: list[list[bytes]] = []
    for s in statements:
        assert len(s) + 1 <= packet, len(s)
        if pieces.is_check(s):
            assert re.fullmatch(rb"SELECT (@davit_v\d+) IS NULL AS davit_too_large", s)
            continue
        m = re.fullmatch(rb"SET (@davit_v\d+) = CONCAT\((?:(@davit_v\d+), )?(.*)\)", s, re.S)
        if m:
            assert m.group(2) in (None, m.group(1))
            variables[m.group(1)] = (variables[m.group(1)] if m.group(2) else b"") + value(m.group(3))
            continue
        if s.startswith(b"SET "):
            for name in re.findall(rb"(@davit_v\d+) = NULL", s):
                del variables[name]
            continue
        parsed = parse(s)
        assert parsed is not None and parsed.head == HEAD.rstrip(b"\n")
        rows += [[variables[v] if v.startswith(b"@") else value(v) for v in r] for r in parsed.rows]
    assert not variables  # every variable set back to NULL
    return rows


def statement(rows: list[tuple[int, bytes]]) -> bytes:
    return HEAD + b",\n".join(b"(" + str(i).encode() + b"," + lit + b")" for i, lit in rows) + b";\n"


def test_a_statement_under_the_packet_goes_as_it_is() -> None:
    s = statement([(1, b"'a'"), (2, b"NULL")])
    assert list(split(s, len(s) + 1, "db.t")) == [s]


def test_rows_go_in_several_inserts_each_under_the_packet_in_order() -> None:
    rows = [(i, quote(f"row {i} ".encode() * 50)) for i in range(200)]
    s = statement(rows)
    out = list(split(s, 8192, "db.t"))
    assert len(out) > 5 and not any(b"@davit" in o for o in out)
    assert play(out, 8192) == [[str(i).encode(), value(lit)] for i, lit in rows]


@pytest.mark.parametrize("literal", [hex_literal(bytes(range(256)) * 300), b"_binary" + quote(bytes(range(256)) * 300)])
def test_a_binary_value_larger_than_a_statement_is_built_in_a_variable(literal: bytes) -> None:
    s = statement([(1, b"'small'"), (2, literal), (3, b"NULL")])
    # the value (76,800 bytes) fits a string of the server's; its literal (153,602 bytes in hex,
    # 78,009 quoted with 1,200 escapes) does not fit a statement
    packet = (100 if literal.startswith(b"0x") else 76) * 1024
    out = list(split(s, packet, "db.t"))
    assert any(o.startswith(b"SET @davit_v0 = CONCAT(@davit_v0, ") for o in out)
    assert play(out, packet) == [[b"1", b"small"], [b"2", bytes(range(256)) * 300], [b"3", b"NULL"]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "é", "€", "😀", "\\", "'", "\0", "\x1a", "\n", "ab"]), min_size=1, max_size=1500).map("".join),
    st.booleans(),
)
def test_a_text_value_is_cut_between_characters_and_escapes(text: str, doubled: bool) -> None:
    # davit writes a quote \', other dumps may write it ''
    data = text.encode()
    literal = quote(data) if not doubled else b"'" + data.replace(b"\\", b"\\\\").replace(b"'", b"''") + b"'"
    s = statement([(1, literal)])
    packet = pieces.OVERHEAD + 120  # pieces of a few dozen bytes: many cuts, at every kind of place
    out = list(split(s, packet, "db.t")) if len(s) >= packet else [s]
    for o in out:
        m = re.fullmatch(rb"SET @davit_v0 = CONCAT\((?:@davit_v0, )?'(.*)'\)", o, re.S)
        if m:
            m.group(1).decode()  # each piece whole UTF-8 on its own: the server reads it as characters
    assert play(out, packet) == [[b"1", text.encode()]]


def test_two_large_values_of_one_row_each_get_a_variable() -> None:
    # each value (3,000 bytes) fits a string, each literal (6,002) alone is over a statement
    a, b = hex_literal(b"\x01" * 3000), hex_literal(b"\xff" * 3000)
    s = HEAD + b"(" + a + b"," + b + b");\n"
    packet = 4000 + pieces.OVERHEAD
    out = list(split(s, packet, "db.t"))
    assert play(out, packet) == [[b"\x01" * 3000, b"\xff" * 3000]]
    assert out[-2] == HEAD + b"(@davit_v0,@davit_v1);\n" and out[-1] == b"SET @davit_v0 = NULL, @davit_v1 = NULL"


def test_a_value_larger_than_the_packet_is_refused_naming_the_table_before_anything_is_sent() -> None:
    s = statement([(7, hex_literal(b"\x01" * 20000))])
    with pytest.raises(ValueTooLarge) as caught:
        list(split(s, 16384, "shop.blobs"))
    assert "shop.blobs" in str(caught.value) and "column 2" in str(caught.value) and "20480" in str(caught.value)


def test_names_that_read_like_sql_do_not_move_the_head_or_the_rows() -> None:
    head = b"INSERT INTO `VALUES (1)` (`a,)`,`'b`) VALUES\n"
    s = head + b"(1,'x'),\n(2,'y);(');\n"
    parsed = parse(s)
    assert parsed is not None and parsed.head == head.rstrip(b"\n")
    assert parsed.rows == [[b"1", b"'x'"], [b"2", b"'y);('"]]


@pytest.mark.parametrize(
    "text",
    [
        b"CREATE TABLE t (a INT)",
        b"INSERT INTO t SELECT * FROM u",
        b"INSERT INTO t VALUES (1,",
        b"INSERT INTO t VALUES (1); (2)",
        b"INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = (2)",
        b"INSERT INTO t VALUES (1),, 'x'",
    ],
)
def test_what_is_no_insert_of_literal_rows_is_left_to_the_server(text: bytes) -> None:
    assert parse(text) is None
    assert list(split(text, 8, "db.t")) == [text]


def test_largest_value_is_what_the_backup_warns_of() -> None:
    assert pieces.largest_value(statement([(1, hex_literal(b"\0" * 1000)), (2, quote(b"\\" * 300))])) == 1000
    assert pieces.largest_value(b"not sql") == 0

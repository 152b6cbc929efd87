"""The page boundary of a keyed read (`pages.py`): `key > last` as the optimizer's ranges, each
value as a literal that compares as ORDER BY orders; keys without such a literal are not paged."""

from __future__ import annotations

import pytest

from davit.adapters.mysql import pages


def test_a_composite_key_continues_after_the_last_row_in_key_order() -> None:
    after = pages._after([b"`a`", b"`b`", b"`c`"], [b"1", b"'x'", b"0x00"])
    assert after == b"(`a` > 1) OR (`a` = 1 AND `b` > 'x') OR (`a` = 1 AND `b` = 'x' AND `c` > 0x00)"


def test_numbers_go_bare_strings_quoted_binary_in_hex() -> None:
    # a number compared with a quoted string is compared as a double: 2^64 - 1 would round
    assert pages._literal("number", b"18446744073709551615") == b"18446744073709551615"
    assert pages._literal("number", "-12.500") == b"-12.500"
    assert pages._literal("text", b"o'k\\") == b"'o\\'k\\\\'"
    assert pages._literal("hex", b"\x00\xff") == b"0x00ff"
    with pytest.raises(ValueError):
        pages._literal("number", b"1 OR 1=1")


@pytest.mark.parametrize(
    ("key", "types", "usable"),
    [
        (["id"], [("id", "int", False)], True),
        (["s", "d"], [("s", "varchar", True), ("d", "datetime", False)], True),
        (["f"], [("f", "double", False)], False),  # a double's text may round
        (["e"], [("e", "enum", True)], False),  # ordered by position, compared as text
        (["g"], [("x", "int", False)], False),  # a generated key column is not read
        (None, [("x", "int", False)], False),
    ],
)
def test_only_keys_whose_literals_order_as_the_column_are_paged(
    key: list[str] | None, types: list[tuple[str, str, bool]], usable: bool
) -> None:
    assert pages.usable(key, types) is usable

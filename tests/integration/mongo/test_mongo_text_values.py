"""CSV cells and mongoimport's typed columns, without a server: Go date layouts, conversions and
the errors a bad value gives."""

from __future__ import annotations

import datetime

import pytest
from bson import Binary, Decimal128, Int64, ObjectId

from davit.adapters.mongo.textvalues import Columns, go_layout_to_strptime


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("2006-01-02", "%Y-%m-%d"),
        ("2006-01-02T15:04:05.000Z07:00", "%Y-%m-%dT%H:%M:%S.%f%z"),
        ("02/Jan/2006:15:04:05 -0700", "%d/%b/%Y:%H:%M:%S %z"),
        ("2006.01.02 03:04 PM", "%Y.%m.%d %I:%M %p"),
        ("Monday, January 2, 06 100%", "%A, %B 2, %y 100%%"),
    ],
    ids=["date", "rfc3339-millis", "apache-log", "dots-are-not-fractions", "names-and-percent"],
)
def test_go_layouts_become_strptime_formats(layout: str, expected: str) -> None:
    assert go_layout_to_strptime(layout) == expected


def test_typed_columns_convert_each_value_and_nest_dotted_names() -> None:
    columns = Columns(
        [
            "id.auto()",
            "n.int32()",
            "big.int64()",
            "price.decimal()",
            "at.date(2006-01-02 15:04)",
            "ok.boolean()",
            "raw.binary(base64)",
            "a.b.string()",
            "iso.date()",
        ],
        typed=True,
        ignore_blanks=False,
    )
    doc = columns.document(
        [
            '{"$oid": "65f000000000000000000001"}',
            "-3",
            "9000000000",
            "1.10",
            "2024-02-29 23:59",
            "F",
            "AAE=",
            "x",
            "2024-01-02T03:04:05.5+02:00",
        ]
    )
    assert doc == {
        "id": ObjectId("65f000000000000000000001"),
        "n": -3,
        "big": Int64(9_000_000_000),
        "price": Decimal128("1.10"),
        "at": datetime.datetime(2024, 2, 29, 23, 59, tzinfo=datetime.UTC),
        "ok": False,
        "raw": Binary(b"\x00\x01"),
        "a": {"b": "x"},
        "iso": datetime.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    }
    assert type(doc["n"]) is int and type(doc["big"]) is Int64


@pytest.mark.parametrize(
    "column, value, reason",
    [
        ("n.int32()", "2147483648", "column n: '2147483648' is out of range for int32"),
        ("n.int64()", "1.5", "column n: '1.5' is not an integer"),
        ("ok.boolean()", "maybe", "column ok: 'maybe' is not a boolean"),
        ("raw.binary(hex)", "zz", "column raw: 'zz' is not hex"),
        ("d.decimal()", "ten", "column d: 'ten' is not a decimal"),
    ],
    ids=["int32-range", "int64-fraction", "boolean", "hex", "decimal"],
)
def test_a_value_its_column_type_refuses_names_the_column_and_value(column: str, value: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
        Columns([column], typed=True, ignore_blanks=False).document([value])


def test_untyped_columns_keep_strings_and_blanks_can_be_left_out() -> None:
    assert Columns(["a", "b.c"], typed=False, ignore_blanks=False).document(["1", ""]) == {"a": "1", "b": {"c": ""}}
    assert Columns(["a", "b.c"], typed=False, ignore_blanks=True).document(["1", ""]) == {"a": "1"}

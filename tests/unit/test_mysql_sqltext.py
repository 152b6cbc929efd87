"""INSERT statements cut a batch at a time give byte for byte the statements of the row-by-row
loop davit used before (kept here as the reference), whatever the rows and wherever the
driver's batches fall: backups made by either deduplicate against each other's chunks."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from davit.adapters.mysql.sqltext import statements

HEAD = b"INSERT INTO `t` (`a`) VALUES\n"


def row_by_row(head: bytes, rows: Iterable[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """The cutting rule as davit ran it until the batched version (verbatim)."""
    target, minimum = max(1, limit // 4), limit // 16
    parts: list[bytes] = []
    size = 0
    for row in rows:
        if parts and size + len(row) + 2 > limit:
            yield head + b",\n".join(parts) + b";\n", len(parts)
            parts, size = [], 0
        parts.append(row)
        size += len(row) + 2
        if size >= minimum and zlib.crc32(row) < (1 << 32) * len(row) // target:
            yield head + b",\n".join(parts) + b";\n", len(parts)
            parts, size = [], 0
    if parts:
        yield head + b",\n".join(parts) + b";\n", len(parts)


def in_batches(rows: list[bytes], sizes: list[int]) -> list[list[bytes]]:
    """`rows` split where `sizes` say (the last batch takes what is left; empty batches too)."""
    batches, at = [], 0
    for size in sizes:
        batches.append(rows[at : at + size])
        at += size
    return [*batches, rows[at:]]


# Rows from empty to several times the limit, so that some straddle a cut and some are alone
# larger than `limit`; mostly small, as a table's rows are.
ROW = st.one_of(
    st.binary(min_size=0, max_size=40),
    st.binary(min_size=0, max_size=40),
    st.binary(min_size=100, max_size=1200),
    st.integers(min_value=0, max_value=5000).map(lambda n: b"(%d,'%s')" % (n, b"x" * n)),
)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(ROW, max_size=300),
    sizes=st.lists(st.integers(min_value=0, max_value=50), max_size=20),
    limit=st.sampled_from([16, 64, 300, 1024, 4096]),
)
def test_batched_statements_are_byte_for_byte_those_of_the_row_loop(rows: list[bytes], sizes: list[int], limit: int) -> None:
    assert list(statements(HEAD, in_batches(rows, sizes), limit)) == list(row_by_row(HEAD, rows, limit))


# Rows whose sizes (length + 2) add up exactly to `limit` or to `minimum` often: the edges of the rule.
EDGE_ROW = st.builds(lambda n, salt: bytes([salt]) * n, st.sampled_from([0, 1, 2, 6, 14, 30, 62]), st.integers(0, 255))


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(EDGE_ROW, max_size=200),
    sizes=st.lists(st.integers(min_value=0, max_value=20), max_size=20),
    limit=st.sampled_from([16, 32, 64, 128]),
)
def test_rows_filling_a_statement_exactly_to_its_limit_are_cut_as_before(rows: list[bytes], sizes: list[int], limit: int) -> None:
    assert list(statements(HEAD, in_batches(rows, sizes), limit)) == list(row_by_row(HEAD, rows, limit))


def test_a_large_table_fetched_a_thousand_rows_at_a_time_is_cut_as_before() -> None:
    rows = [b"(%d,'%s','%d')" % (i, b"v" * (i % 97), i * 7919) for i in range(60_000)]
    limit = 64 << 10
    batched = list(statements(HEAD, in_batches(rows, [1000] * 59), limit))
    assert batched == list(row_by_row(HEAD, rows, limit))
    assert len(batched) > 50  # cut many times: the comparison covers cuts inside and across batches


def test_a_row_larger_than_the_limit_is_a_statement_of_its_own_between_cuts() -> None:
    small = [b"(%d,'a')" % i for i in range(400)]
    huge = b"(0,'" + b"z" * 20_000 + b"')"
    rows = [*small, huge, *small, huge, huge, *small]
    found = list(statements(HEAD, in_batches(rows, [399, 2, 3, 400]), 4096))
    assert found == list(row_by_row(HEAD, rows, 4096))
    assert (HEAD + huge + b";\n", 1) in found

"""Rows cut into INSERT statements (each row a `(...)` tuple of literals: `literals.py`).

Statements are cut where the content says, not at a fixed size: after a row whose hash falls
under a threshold proportional to its length (so a cut comes about every `target` bytes
whatever the row size), at least `minimum` bytes after the last cut, and always before
`limit`. A row inserted or changed in a table moves only the cuts near it: the other
statements (chunks) of an unchanged stretch are byte for byte those of the previous backup,
and the repository stores them once.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Generator, Iterable, Sequence
from functools import partial
from itertools import accumulate, compress, count, repeat
from operator import add, floordiv, lt, mul

from davit.adapters.mysql.client import quote_name

_HASH_SPACE = 1 << 32
_PLUS_TWO = partial(add, 2)
_WINDOW = 256  # rows hashed at a time while looking for a cut


def insert_head(table: str, columns: Sequence[str]) -> bytes:
    return f"INSERT INTO {quote_name(table)} ({','.join(quote_name(c) for c in columns)}) VALUES\n".encode()


def statements(head: bytes, batches: Iterable[Sequence[bytes]], limit: int) -> Generator[tuple[bytes, int], None, None]:
    """INSERT statements of whole rows (each about `limit / 4` bytes, never more than `limit` unless
    one row alone is larger), and how many rows each holds; the rows come in batches (the
    driver's fetches), and where a batch falls does not move a cut.

    The rule, row by row: a row that would take the statement past `limit` starts a new one;
    a row that brings the statement to `minimum` bytes or more and whose CRC-32 falls under
    `_HASH_SPACE * len(row) // target` ends it. It is applied here a batch at a time (the
    per-row work, hash and threshold, in C through `map`; Python only per statement), giving
    the same bytes as the row-by-row loop did, so new backups deduplicate against old ones
    (tests/unit/test_mysql_sqltext.py checks both against each other)."""
    target, minimum = max(1, limit // 4), limit // 16
    carry: list[bytes] = []  # rows of the statement under way, from earlier batches
    carried = 0  # its size: each row's length + 2 (its separator, or the `;\n` after the last)
    for batch in batches:
        if not batch:
            continue
        lengths = list(map(len, batch))
        # ends[i]: the size of rows 0..i of this batch (each + 2), for bisecting to a limit
        ends = list(accumulate(map(_PLUS_TWO, lengths)))
        pos, end = 0, len(batch)
        while pos < end:
            before = (ends[pos - 1] if pos else 0) - carried  # statement size after row i: ends[i] - before
            over = bisect_right(ends, limit + before, pos)  # the first row that would take it past `limit`
            if over == pos and not carry:
                over = pos + 1  # a row alone larger than `limit` is a statement of its own
            # a row ends it by its hash only once it holds `minimum` bytes, and before `over`
            cut = _hash_cut(batch, lengths, bisect_left(ends, minimum + before, pos), min(over, end), target)
            if cut is not None:  # ends after row `cut`
                yield _statement(head, carry, batch, pos, cut + 1)
                carry, carried, pos = [], 0, cut + 1
            elif over < end:  # ends before row `over`
                yield _statement(head, carry, batch, pos, over)
                carry, carried, pos = [], 0, over
            else:  # the batch ends first: its rest carries over
                carry.extend(batch[pos:])
                carried = ends[-1] - before
                pos = end
    if carry:
        yield head + b",\n".join(carry) + b";\n", len(carry)


def _hash_cut(batch: Sequence[bytes], lengths: list[int], start: int, stop: int, target: int) -> int | None:
    """The first row in `start:stop` whose CRC-32 falls under `_HASH_SPACE * len(row) // target`,
    looked for a window at a time: the rows before `minimum` are never hashed (as the row loop
    never hashed them), and those after a cut wait for the next statement's own look."""
    for lo in range(start, stop, _WINDOW):
        hi = min(lo + _WINDOW, stop)
        thresholds = map(floordiv, map(mul, lengths[lo:hi], repeat(_HASH_SPACE)), repeat(target))
        hit = next(compress(count(lo), map(lt, map(zlib.crc32, batch[lo:hi]), thresholds)), None)
        if hit is not None:
            return hit
    return None


def _statement(head: bytes, carry: list[bytes], batch: Sequence[bytes], start: int, stop: int) -> tuple[bytes, int]:
    rows = [*carry, *batch[start:stop]] if carry else batch[start:stop]
    return head + b",\n".join(rows) + b";\n", len(rows)

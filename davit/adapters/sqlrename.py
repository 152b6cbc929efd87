"""A SQL restore's renames, checked against the snapshot: no two of its databases into one."""

from __future__ import annotations

from davit.domain.errors import PermanentError


def one_source_each(pairs: list[list[str]]) -> None:
    """Refuse two snapshot databases restored into one (`rename = { old = "shop" }` with `shop`
    in the snapshot too): the job's check only sees `rename`'s own targets, and here two loads of
    `shop.orders` would run as one step, each emptying or doubling the other's rows."""
    into: dict[str, list[str]] = {}
    for src, dst in pairs:
        into.setdefault(dst, []).append(src)
    for dst, sources in into.items():
        if len(sources) > 1:
            raise PermanentError(
                f"databases {' and '.join(sources)} of the snapshot would both be restored into {dst} (their tables "
                "would mix): rename one of them to another name, or leave one out with include"
            )

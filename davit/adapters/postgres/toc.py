"""Leaving tables out of a schema restore: the lines of `pg_restore -l` that belong to them.

`pg_restore -l` prints one line per archive entry: `ID; CATALOG OID DESC SCHEMA NAME OWNER`.
The names are printed unquoted (a name may hold spaces), so an entry is recognised by its
catalog and object oid, which the backup recorded for every table from the same snapshot the
schema was dumped in: the table itself, its indexes, constraints (also foreign keys of other
tables that point at it), triggers, column defaults, rules, policies, owned sequences, and
views read from it directly. Entries without an oid (`0 0`: COMMENT, ACL, SECURITY LABEL,
SEQUENCE OWNED BY) are recognised by the exact table or sequence name that follows their
kind. The filtered list goes to `pg_restore -L`, which restores only the entries listed,
in the archive's order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OIDLESS = ("COMMENT", "ACL", "SECURITY LABEL", "SEQUENCE OWNED BY")


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _oidless_markers(schema: str, table: str, sequences: Iterable[str]) -> list[str]:
    """What follows `DESC ` in an oid-less entry of this table or of its owned sequences:
    pg_restore prints names as pg_dump quoted them, which we match both ways."""
    markers = []
    for form in {table, quoted(table)}:
        markers += [f"{schema} TABLE {form} ", f"{schema} COLUMN {form}."]
    for seq in sequences:
        markers += [f"{schema} {seq} "]
        markers += [f"{schema} SEQUENCE {form} " for form in {seq, quoted(seq)}]
    return markers


def leave_out(listing: str, tables: list[list[Any]]) -> tuple[str, int]:
    """`listing` (pg_restore -l output) without the entries of `tables`, each
    `[schema, table, ["CATALOG:OID", ...], [owned sequence, ...]]`; and how many went."""
    objects = {str(o) for t in tables for o in t[2]}
    markers = [m for s, t, _o, seqs in tables for m in _oidless_markers(str(s), str(t), seqs)]
    kept, dropped = [], 0
    for line in listing.splitlines():
        if _belongs(line, objects, markers):
            dropped += 1
        else:
            kept.append(line)
    return "\n".join(kept) + "\n", dropped


def _belongs(line: str, objects: set[str], markers: list[str]) -> bool:
    if not line or line.startswith(";"):
        return False
    _id, _, rest = line.partition("; ")
    parts = rest.split(" ", 2)
    if len(parts) < 3:
        return False
    catalog, oid, described = parts
    if f"{catalog}:{oid}" in objects:
        return True
    if catalog == "0" and oid != "0":  # ROW SECURITY: 0 and the table's oid
        return f"1259:{oid}" in objects
    return any(described.startswith(kind + " ") and described[len(kind) + 1 :].startswith(tuple(markers)) for kind in OIDLESS)

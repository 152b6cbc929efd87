"""Row-level security policies naming roles the restore target lacks (`privileges = "skip"`).

`privileges = "skip"` restores into a cluster that lacks the snapshot's roles, but a policy's
`TO role, ...` is part of its definition, not a grant: pg_restore's `--no-privileges` keeps
it, and the post-data section fails on the first role missing. A policy applies only to the
roles it names, and a role that does not exist is nobody, so the faithful restore is the same
policy for the roles the target HAS: a role missing is taken out of the list, and a policy
left naming none is not created (it would apply to no one). Nothing is widened, as rewriting
such a policy `TO PUBLIC` would do (a permissive policy would then let every role see the
rows); the run warns naming each policy and each role left out, so an operator who creates
the roles later knows what to add back.

pg_dump writes a policy's definition in one shape (pg_dump.c, `dumpPolicy`):
`CREATE POLICY name ON schema.table[ AS RESTRICTIVE][ FOR cmd][ TO role, ...][ USING (..)]
[ WITH CHECK (..)];` where every name is quoted as `fmtId`/`quote_ident` quote them (bare
lower-case or `"..."` with `""` doubled). The definition is read by that grammar with a
linear expression; a definition of another shape is left as it was (pg_restore then fails
naming the role, as before).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from davit.adapters.postgres.archive import Archive

_IDENT = rb'(?:"(?:[^"]|"")*"|[a-z_][a-z0-9_$]*)'
_HEAD = re.compile(
    rb"CREATE POLICY (?P<name>" + _IDENT + rb") ON (?P<table>" + _IDENT + rb"(?:\." + _IDENT + rb")?)"
    rb"(?: AS RESTRICTIVE)?(?: FOR (?:ALL|SELECT|INSERT|UPDATE|DELETE))? TO "
)
_ROLE = re.compile(_IDENT)
# Role specifications that name no role of pg_roles but always mean someone (gram.y `RoleSpec`:
# PUBLIC spelt bare or quoted, the three keywords bare only; a quoted "current_user" is a role).
# They are never "missing": taking `public` out of `TO public, ghost` (which PostgreSQL reads as
# PUBLIC) would leave out a RESTRICTIVE policy that applied to every role, widening what they see.
_SPECIFIERS = {b"public", b'"public"', b"current_user", b"current_role", b"session_user"}
# What pg_dump writes after the TO list; a list followed by anything else (`TO a,b` without the
# space, a bare name with letters the pattern stops at) is not read, so never cut short.
_AFTER_ROLES = (b" USING (", b" WITH CHECK (", b";")


@dataclass(frozen=True)
class Fitted:
    """One policy whose role list lost roles: its name, table, the roles left out, and whether
    it was left out whole (it named no role the target has)."""

    policy: str
    table: str
    missing: list[str]
    dropped: bool

    def describe(self) -> str:
        what = "not created (no role it names exists)" if self.dropped else "kept for the roles that exist"
        return f"policy {self.policy} on {self.table}: {what}; left out: {', '.join(self.missing)}"


def _unquote(ident: bytes) -> str:
    text = ident.decode("utf-8", "surrogateescape")
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def _roles_at(defn: bytes, start: int) -> tuple[list[bytes], int] | None:
    """The role names of a `TO` list starting at `start`, and where the list ends."""
    roles, pos = [], start
    while (m := _ROLE.match(defn, pos)) is not None:
        roles.append(m.group())
        pos = m.end()
        if not defn.startswith(b", ", pos):
            return (roles, pos) if defn.startswith(_AFTER_ROLES, pos) else None
        pos += 2
    return None


def fit_policy(defn: bytes, existing: set[str]) -> tuple[bytes | None, Fitted | None]:
    """`defn` with the roles not in `existing` taken out of its TO list: (new definition or
    None when no role is left, what changed or None when nothing did)."""
    head = _HEAD.match(defn)
    if head is None:
        return defn, None  # PUBLIC (no TO list) or a shape pg_dump does not write
    found = _roles_at(defn, head.end())
    if found is None:
        return defn, None
    roles, end = found
    kept = [r for r in roles if r in _SPECIFIERS or _unquote(r) in existing]
    if len(kept) == len(roles):
        return defn, None
    fitted = Fitted(
        _unquote(head["name"]),
        head["table"].decode("utf-8", "surrogateescape"),
        [_unquote(r) for r in roles if r not in kept],
        dropped=not kept,
    )
    if not kept:
        return None, fitted
    return defn[: head.end()] + b", ".join(kept) + defn[end:], fitted


def fit_policies(archive: Archive, existing: set[str]) -> tuple[Archive, list[Fitted]]:
    """`archive` with every POLICY entry fitted to the roles `existing` on the target."""
    entries, changes = [], []
    for entry in archive.entries:
        if entry.desc == b"POLICY" and entry.defn:
            defn, fitted = fit_policy(entry.defn, existing)
            if fitted is not None:
                changes.append(fitted)
            # a policy left out keeps its entry, empty (pg_restore prints no empty definition):
            # the archive's dependencies stay whole
            entry = replace(entry, defn=defn if defn is not None else b"")
        entries.append(entry)
    return Archive(archive.header, entries), changes

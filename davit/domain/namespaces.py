"""Namespace patterns as mongorestore defines them: include/exclude matching and renaming.

A namespace is `db.collection`. In a pattern `*` matches any run of characters (dots
included), `\\*` is a literal star and `\\\\` a literal backslash. Renaming pairs a `from`
pattern with a `to` pattern: either both use the same number of `*` (the n-th star of `to`
receives what the n-th star of `from` matched), or `from` names variables `$name$` (each
matching lazily) that `to` reuses in any order; a `from` that has a `$` treats `*` literally.
As in mongorestore, when several pairs match a namespace the pair given last wins.
Pure string logic, no I/O, so both the backup and the restore adapters (and the tests) share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_SPECIAL = set("*[](){}\\?$^+!.|")
MAX_PATTERN_LENGTH = 1024


class PatternError(ValueError):
    """A pattern or a from/to pair mongorestore would refuse; the message says why."""


def split_ns(ns: str) -> tuple[str, str]:
    """`db.coll.name` -> (`db`, `coll.name`): the database is everything before the first dot."""
    db, sep, coll = ns.partition(".")
    if not sep or not db or not coll:
        raise PatternError(f"{ns!r} is not a namespace of the form DB.COLLECTION")
    return db, coll


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "\\*":
            out.append(text[i + 1])
            i += 2
            continue
        if c != "\\":
            out.append(c)
        i += 1
    return "".join(out)


def _stars_to_variables(text: str) -> str:
    """`pre*.*` -> `pre$1$.$2$`; escaped stars stay stars, then escapes are removed."""
    out, i, n = [], 0, 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i : i + 2])
            i += 2
            continue
        if c == "*":
            out.append(f"${n}$")
            n += 1
        else:
            out.append(c)
        i += 1
    return _unescape("".join(out))


def _count_stars(text: str) -> int:
    return text.count("*") - text.count("\\*")


def _compile(source: str, target: str) -> tuple[re.Pattern[str], list[tuple[bool, str]]]:
    """A regex for `source` and the replacement as (is_group, text) parts."""
    for text in (source, target):
        if len(text) > MAX_PATTERN_LENGTH:
            # a namespace is at most 255 bytes; the bound keeps checking a job file cheap
            # (the regex compiler costs ~15 us per `*`)
            raise PatternError(
                f"longer than {MAX_PATTERN_LENGTH} characters ({len(text)}); a MongoDB namespace is at most 255 bytes"
            )
    if "$" not in source:
        source, target = _stars_to_variables(source), _stars_to_variables(target)
    names: dict[str, int] = {}
    regex: list[str] = []
    for is_var, text in _tokens(source):
        if is_var:
            if text in names:
                raise PatternError(f"variable name {text!r} used more than once")
            names[text] = len(names) + 1
            regex.append("(.*?)")
        else:
            regex.append(("\\" if text in _SPECIAL else "") + text)
    parts: list[tuple[bool, str]] = []
    for is_var, text in _tokens(target):
        if is_var:
            if text not in names:
                raise PatternError(f"unknown variable {text!r}")
            parts.append((True, str(names[text])))
        else:
            parts.append((False, text))
    return re.compile("(?s)^" + "".join(regex) + "$"), parts


def _tokens(text: str) -> Iterator[tuple[bool, str]]:
    """`$name$` variables and single characters, as (is_variable, text), in one pass."""
    i = 0
    while i < len(text):
        if text[i] == "$":
            end = text.find("$", i + 1)
            if end < 0:
                raise PatternError("extraneous '$'")
            yield True, text[i + 1 : end]
            i = end + 1
        else:
            yield False, text[i]
            i += 1


@dataclass(frozen=True)
class Matcher:
    """Include/exclude patterns (`db.*`, `db.coll*`, `\\*` for a literal star)."""

    patterns: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Sequence[str]) -> Matcher:
        for pattern in patterns:
            check_pattern(pattern)
        return cls(tuple(patterns))

    def matches(self, ns: str) -> bool:
        return any(_compile(p, p)[0].match(ns) for p in self.patterns)


def check_pattern(pattern: str) -> str:
    """Validate one include/exclude pattern; `$` is not allowed in them."""
    if "$" in pattern:
        raise PatternError(f"'$' is not allowed in include/exclude patterns: {pattern!r}")
    if not pattern:
        raise PatternError("empty namespace pattern")
    _compile(pattern, pattern)
    return pattern


def check_rename(source: str, target: str) -> None:
    """Refuse a from/to pair mongorestore would refuse, with its reason."""
    if "$" in source:
        if source.count("$") % 2:
            raise PatternError(f"odd number of dollar signs in from: {source!r}")
        if target.count("$") % 2:
            raise PatternError(f"odd number of dollar signs in to: {target!r}")
    elif _count_stars(source) != _count_stars(target):
        raise PatternError(f"different number of asterisks in from {source!r} and to {target!r}")
    try:
        _compile(source, target)
    except PatternError as exc:
        raise PatternError(f"invalid rename from {source!r} to {target!r}: {exc}") from exc


@dataclass(frozen=True)
class Renamer:
    """Maps a namespace through `ns_from`/`ns_to` pairs; unmatched namespaces keep their name."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, sources: Sequence[str], targets: Sequence[str]) -> Renamer:
        if len(sources) != len(targets):
            raise PatternError(f"ns_from has {len(sources)} patterns but ns_to has {len(targets)}")
        for source, target in zip(sources, targets, strict=True):
            check_rename(source, target)
        return cls(tuple(zip(sources, targets, strict=True)))

    def rename(self, ns: str) -> str:
        for source, target in reversed(self.pairs):
            regex, parts = _compile(source, target)
            found = regex.match(ns)
            if found:
                return "".join(found[int(text)] if group else text for group, text in parts)
        return ns


def select(namespaces: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The namespaces that match an include pattern (all when there is none) and no exclude."""
    inc, exc = Matcher.of(include), Matcher.of(exclude)
    return [ns for ns in namespaces if (not include or inc.matches(ns)) and not exc.matches(ns)]

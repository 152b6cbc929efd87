"""Where a bind-mounted path of a compose project lands on another host: `path_map`.

A job's `path_map` (`{ "/srv/uploads" = "/data/shop/uploads" }`) moves a bind source outside
the project directory, and everything under it, to another place on the target. Pure rules,
kept here so they can be checked without an engine: each side must be an absolute, normalised
path (no `.`, `..` or empty component, no control character), a source prefix matches whole
components only (`/srv/up` does not map `/srv/uploads`), the longest prefix wins, and a set of
placements must not make two sources share, or nest differently into, one target directory
(their data would mix, and a rollback removing one would remove the other).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

OUTSIDE_BINDS = ("fail", "keep-path", "skip")
MAX_PATH = 4096  # PATH_MAX on Linux: a longer path cannot be a bind source anyway


def check_path(value: str, what: str) -> str:
    """`value` if it is an absolute, normalised path; else `ValueError` naming `what` and why."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{what}: {value!r} must be an absolute path")
    if len(value) > MAX_PATH:
        raise ValueError(f"{what}: longer than {MAX_PATH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{what}: {value!r} holds a control character")
    if value != "/" and value.endswith("/"):
        raise ValueError(f"{what}: {value!r} ends with '/' (write it without)")
    parts = value.split("/")[1:]
    if value != "/" and ("" in parts or "." in parts or ".." in parts):
        raise ValueError(f"{what}: {value!r} is not normalised (empty, '.' or '..' component)")
    if posixpath.normpath(value) != value:
        raise ValueError(f"{what}: {value!r} is not normalised")
    return value


def check_path_map(value: Mapping[str, str]) -> dict[str, str]:
    """A job's `path_map`, every entry checked; no target is `/` and no two sources share a target."""
    checked: dict[str, str] = {}
    for source, target in value.items():
        check_path(source, f"path_map key {source!r}")
        check_path(target, f"path_map[{source!r}]")
        if target == "/":
            raise ValueError(f"path_map[{source!r}]: '/' cannot be a target (a rollback would remove it)")
        checked[source] = target
    targets = list(checked.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"path_map: several sources map to {', '.join(twice)} (their data would mix)")
    return checked


def within(path: str, prefix: str) -> bool:
    """`path` is `prefix` or lies under it, by whole components."""
    return path == prefix or prefix == "/" or path.startswith(prefix + "/")


def map_path(path: str, path_map: Mapping[str, str]) -> str | None:
    """Where `path` lands by the longest matching prefix of `path_map`; None when none matches."""
    best: str | None = None
    for source in path_map:
        if within(path, source) and (best is None or len(source) > len(best)):
            best = source
    if best is None:
        return None
    rest = path[len(best) :] if best != "/" else path
    return path_map[best] + rest if rest != "/" else path_map[best]


def placement_conflicts(placements: Mapping[str, str]) -> list[str]:
    """Problems with a set of placements (source path -> target path): two sources on one
    target, or a target inside another whose source does not hold the first source at the same
    place (so the data of two unrelated directories would mix)."""
    problems: list[str] = []
    items = sorted(placements.items(), key=lambda kv: kv[1])
    for i, (src_a, dst_a) in enumerate(items):
        for src_b, dst_b in items[i + 1 :]:
            if dst_a == dst_b:
                problems.append(f"{src_a} and {src_b} would both land at {dst_a}")
            elif within(dst_b, dst_a) and src_b != src_a + dst_b[len(dst_a) :]:
                problems.append(f"{src_b} would land at {dst_b}, inside {dst_a} where {src_a} lands")
            elif within(dst_a, dst_b) and src_a != src_b + dst_a[len(dst_b) :]:
                problems.append(f"{src_a} would land at {dst_a}, inside {dst_b} where {src_b} lands")
    return problems


def splice(text: str, replacements: list[tuple[int, int, str]]) -> str:
    """`text` with each `(start, end, new)` span replaced; the spans must not overlap."""
    out: list[str] = []
    at = 0
    for start, end, new in sorted(replacements):
        if start < at:
            raise ValueError(f"overlapping replacements at {start}")
        out += [text[at:start], new]
        at = end
    out.append(text[at:])
    return "".join(out)

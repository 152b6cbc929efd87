"""Whether a name taken from a snapshot, a job file or a server is safe as one path component.

A name is joined onto a directory only if it is exactly one component of it: not empty, not
`.` or `..`, holding no `/` (so it is never absolute and never climbs) and no NUL. Pure string
logic, shared by every adapter that turns stored names into paths (exports, restores).
"""

from __future__ import annotations


def unsafe_reason(component: str) -> str | None:
    """Why `component` is not a safe single path component, or None if it is."""
    if not component:
        return "it is empty"
    if component in (".", ".."):
        return f"it is {component!r}"
    if "/" in component:
        return "it holds '/'" + (" (an absolute path)" if component.startswith("/") else "")
    if "\0" in component:
        return "it holds a NUL byte"
    return None


def is_safe_name(component: str) -> bool:
    """True if `component` names an entry directly inside a directory, and nothing else."""
    return unsafe_reason(component) is None

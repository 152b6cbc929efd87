"""Shell commands that reach a directory on the migration's target one component at a time from
`/`, never through a symlink, and then work inside it by relative names only.

Checking a path's components for symlinks and then handing the same absolute path to `mkdir -p`
or `tar -C` leaves a window: the kernel resolves the path again, from `/`, and a component
swapped for a symlink meanwhile (by a local user or a container that can write along the path)
is followed, by root. Here the shell `cd`s into each component in turn, creating it if asked,
and after each step compares the kernel's own name for its working directory (`pwd -P`, i.e.
getcwd(2), which names the directory itself, never a link to it) with the expected path. Every
later step resolves a single name relative to that checked working directory, and the final
command (`tar -x -C .`, `rm -rf -- ./NAME`) runs in it, so:

- a symlink planted before the walk reaches a component is refused by name (`[ -L ]`);
- one planted between that test and the `cd` is followed by the `cd` only, and the next
  comparison refuses it before anything is created or written there;
- one planted after the comparison changes nothing: the shell holds the directory itself (its
  working directory is an inode, not a path), and the command's relative names resolve in it.

The exit status is 3 on a refusal, with the reason on stderr.
"""

from __future__ import annotations

import posixpath
import shlex

q = shlex.quote
REFUSED = 3  # the walk's exit status when it refuses a component


def _fail(message: str) -> str:
    return f"{{ printf '%s\\n' {q(message)} >&2; exit {REFUSED}; }}"


def walk_into(path: str, create: bool) -> str:
    """Shell statements leaving the shell inside `path` (absolute), reached without following a
    symlink; missing components are created when `create`, else the statements `exit 0` at the
    first missing one (nothing there to work on)."""
    norm = posixpath.normpath(path)
    parts = [p for p in norm.split("/") if p]
    if not norm.startswith("/") or any(p in (".", "..") for p in parts):
        raise ValueError(f"not an absolute, normalised path: {path!r}")
    steps = [f"cd / || {_fail('cannot enter / on the target')}"]
    here = ""
    for part in parts:
        here += "/" + part
        name = q(part)
        moved = _fail(f"{here} changed while davit reached it (a symlink or a move on the target): refused")
        missing = f"mkdir {name} 2>/dev/null || [ -d {name} ] || {_fail(f'cannot create {here} on the target')}"
        steps += [
            f"if [ -L {name} ]; then {_fail(f'symlink on the target: {here}')}; fi",
            f"if [ ! -e {name} ]; then {missing if create else 'exit 0'}; fi",
            f"cd -P {name} || {_fail(f'cannot enter {here} on the target')}",
            # the directory the shell now holds must be `here` itself: `cd` followed a symlink
            # swapped in after the test above, or a component was moved, if it is not
            f'[ "$(env pwd -P)" = {q(here)} ] || {moved}',
        ]
    return "; ".join(steps)


def unpack_into(path: str, unpack_here: str) -> str:
    """`unpack_here` (reading a tar stream on stdin, writing relative to its working directory)
    run inside `path`, created as needed, reached without following a symlink."""
    return f"{walk_into(path, create=True)}; {unpack_here}"


def remove(path: str) -> str:
    """`rm -rf` of `path`, from inside its parent reached without following a symlink: a
    symlink at `path` itself is removed, not followed (GNU rm never follows one below it)."""
    parent, name = posixpath.split(posixpath.normpath(path))
    if not name:
        raise ValueError(f"refusing to remove {path!r}")
    return f"{walk_into(parent, create=False)}; rm -rf -- {q('./' + name)}"

"""The chunk ids in a snapshot tree's lines, and the lines with those ids renamed for another repository.

Every tree, whatever adapter wrote it, names its chunks in one key of each JSON line, `c` (see
`repository/treeformat.py`): files and volumes trees (`files/backup.py`), MongoDB's one line per
collection (`mongo/layout.py`) and Weaviate's one line per chunk of objects (`weaviate/tree.py`).
No other key of theirs holds a chunk id (Weaviate's `last` is an object's uuid, not a chunk).
A copy between two repositories whose keys differ renames every chunk (the id is an HMAC
under the repository's key), so it rewrites `c` and keeps every other key as it was. A kind
not in `REWRITABLE` may hold ids elsewhere: it is copied only between repositories of the
same key material, where ids do not change, and refused otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from davit.domain.errors import PermanentError

# snapshot kinds (a manifest's `kind`) whose trees name chunks in `c` only
REWRITABLE = frozenset({"files", "volumes", "mongo", "weaviate", "compose"})  # compose: files-format lines (compose/stacktree.py)

_CHUNK_ID = re.compile(r"[0-9a-f]{64}")


class CopyNotPossible(PermanentError):
    """A snapshot cannot be copied into the destination as asked: its kind's tree cannot be
    rewritten for a repository of other keys, or its tree names something that is not a chunk id."""

    def __init__(self, snapshot: str, source: str, reason: str) -> None:
        super().__init__(f"snapshot {snapshot} of repository {source} cannot be copied: {reason}")
        self.snapshot = snapshot
        self.source = source


def chunk_ids(line: bytes, snapshot: str, source: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The parsed line (None for a blank one) and the chunk ids its `c` key names, each checked
    to be one (the tree comes from a repository anyone who can write it may have edited)."""
    if not line.strip():
        return None, []
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python parses
        raise CopyNotPossible(snapshot, source, f"a line of its tree is not JSON ({type(exc).__name__})") from None
    if not isinstance(entry, dict):
        raise CopyNotPossible(snapshot, source, "a line of its tree is not a JSON object")
    ids = entry.get("c") or []
    if not isinstance(ids, list) or not all(isinstance(c, str) and _CHUNK_ID.fullmatch(c) for c in ids):
        raise CopyNotPossible(snapshot, source, "a line of its tree names something that is not a chunk id in its `c` key")
    return entry, ids


def renamed(entry: dict[str, Any], ids: list[str], rename: Callable[[str], str]) -> bytes:
    """The line of `entry` with its chunk ids renamed; the other keys as they were, in order."""
    if ids:
        entry["c"] = [rename(c) for c in ids]
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def refuse_unrewritable(snapshot: str, kind: str, source: str) -> None:
    """`CopyNotPossible` for a kind whose chunk ids may live outside `c`."""
    if kind not in REWRITABLE:
        raise CopyNotPossible(
            snapshot,
            source,
            f"its kind {kind!r} is not one whose tree this davit can rewrite for a repository with other keys "
            f"(it can for {', '.join(sorted(REWRITABLE))}); copy it into a repository with the same keys, or leave "
            "its job out of the copy's `jobs`",
        )

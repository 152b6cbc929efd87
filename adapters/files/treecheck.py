"""Checking a snapshot's tree before a restore trusts a single name of it.

In a plain repository trees are not authenticated: anyone who can write the repository can
publish a tree whose names say `../x`, `/etc/x`, `lnk/f` under a symlink `lnk`, or a hard link
to `../secret`. A walk never produces such an entry, so a tree holding one is corrupt, and the
restore fails at prepare, before anything is written (the policy of issue 14; the writer in
`confined.py` would refuse such names anyway, this makes the refusal early, whole and typed).

`checked` is one streaming pass in constant memory, except for the paths of entries with more
than one link (the only possible hard-link targets). It enforces what the walk guarantees:
"." first and a directory; every other path "/"-joined components, none empty, ".", ".." or
holding NUL; strictly increasing walk order (so no duplicates); each entry's parent a directory
entry met earlier (so nothing lies under a symlink or a file); a hard link names an earlier
entry of the same non-directory type that had more than one link; known types; integers of
sane range; and `Entry.from_line`'s own failures (bad JSON, wrong field types, bad base64).
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Iterable, Iterator

from adapters.files.tree import DIR, FILE, LINK, TYPES, Entry
from domain.errors import CorruptSnapshot

SHOWN = 160  # characters of an entry quoted in the error
U32, I64, U64 = (1 << 32) - 1, 1 << 63, (1 << 64) - 1
NAME_MAX = 255
HEX = frozenset("0123456789abcdef")


def _shown(what: object) -> str:
    text = repr(what)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def parsed(lines: Iterable[bytes], snapshot_id: str) -> Iterator[Entry]:
    """Entries of a tree's JSON lines, each field of the type and range the walk gives it; a line
    that does not parse, or parses to anything else, is a `CorruptSnapshot`."""
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = Entry.from_line(line)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error) as exc:
            raise CorruptSnapshot(snapshot_id, _shown(line), f"does not parse ({type(exc).__name__}: "
                                  f"{_shown(str(exc))})") from None
        reason = _problem(entry)
        if reason is not None:
            raise CorruptSnapshot(snapshot_id, _shown(line), reason)
        yield entry


def _encodable(name: str) -> bool:
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        return False
    return True


def _int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _problem(entry: Entry) -> str | None:
    """What is wrong with one entry's own fields (not its place in the tree), or None."""
    if type(entry.path) is not str or not (entry.hardlink_to is None or type(entry.hardlink_to) is str):
        return "path or hard link is not a string"
    if type(entry.type) is not str or entry.type not in TYPES:
        return "unknown type"
    if not _int(entry.mode, 0, 0o7777):
        return "mode out of range"
    if not (_int(entry.mtime_ns, -I64, I64 - 1) and _int(entry.ctime_ns, -I64, I64 - 1)):
        return "time out of range"
    if not (_int(entry.uid, 0, U32) and _int(entry.gid, 0, U32)):
        return "owner out of range"
    if not (_int(entry.size, 0, I64 - 1) and _int(entry.inode, 0, U64) and _int(entry.dev, 0, U64)
            and _int(entry.rdev, 0, U64) and _int(entry.nlink, 1, U64)):
        return "size, inode, device or link count out of range"
    if entry.type == LINK:
        if type(entry.target) is not str or not entry.target or "\0" in entry.target or not _encodable(entry.target):
            return "a symlink without a valid target"
    elif entry.target is not None:
        return "a link target on an entry that is not a symlink"
    if type(entry.chunks) is not list or (entry.chunks and entry.type != FILE):
        return "chunks on an entry that is not a file"
    for chunk in entry.chunks:
        if type(chunk) is not str or len(chunk) != 64 or not HEX.issuperset(chunk):
            return "a chunk id that is not 64 hex digits"
    if type(entry.xattrs) is not dict:
        return "extended attributes that are not a mapping"
    for name in entry.xattrs:
        if type(name) is not str or not name or "\0" in name or not _encodable(name):
            return "an extended attribute without a valid name"
    return None


def _path_problem(path: object) -> str | None:
    if type(path) is not str or not path:
        return "path is not a non-empty string"
    if path.startswith("/"):
        return "absolute path"
    if "\0" in path:
        return "path holds a NUL byte"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"path has an empty, '.' or '..' component ({part!r})"
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:
        return "path is not encodable as a file name"
    if len(encoded) > 255 and any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        return f"a path component longer than {NAME_MAX} bytes"
    return None


def checked(entries: Iterable[Entry], snapshot_id: str) -> Iterator[Entry]:
    """The entries (from `parsed`: their fields are sound), each checked for its place in the
    tree before it is yielded; the first that breaks a rule raises `CorruptSnapshot` naming it
    and why."""
    # Directories enclosing the current entry, root first: in walk order an entry's parent, if
    # the tree has it, is on this stack (a directory once left is never a parent again).
    dirs: list[tuple[str, ...]] = []
    link_targets: dict[str, str] = {}  # path -> type, for entries with more than one link
    previous: tuple[str, ...] | None = None
    for entry in entries:
        key: tuple[str, ...] = ()
        if previous is None:
            reason = None if entry.path == "." and entry.type == DIR else \
                "the first entry must be the root '.', a directory"
        else:
            reason = _path_problem(entry.path)
            if reason is None:
                key = tuple(entry.path.split("/"))
                reason = _place_problem(key, previous, dirs)
        if reason is None and entry.hardlink_to is not None:
            first = link_targets.get(entry.hardlink_to)
            if entry.type == DIR or first != entry.type:
                reason = "a hard link to a path that is not an earlier multiply-linked entry of its type"
        if reason is not None:
            raise CorruptSnapshot(snapshot_id, _shown(_describe(entry)), reason)
        if entry.type == DIR:
            dirs.append(key)
        elif entry.nlink > 1:
            link_targets[entry.path] = entry.type
        previous = key
        yield entry


def _place_problem(key: tuple[str, ...], previous: tuple[str, ...], dirs: list[tuple[str, ...]]) -> str | None:
    """Whether `key` comes after `previous` with its parent on `dirs` (popped to that parent)."""
    if key <= previous:
        return "out of walk order (or a duplicate)"
    depth = len(key) - 1
    while len(dirs[-1]) > depth or dirs[-1] != key[:len(dirs[-1])]:
        dirs.pop()  # never the root's (): it is a prefix of every key
    if len(dirs[-1]) != depth:
        return "its parent is not a directory of the snapshot met before it"
    return None


def _describe(entry: Entry) -> str:
    return f"path={entry.path!r} type={entry.type!r} target={entry.target!r} hardlink_to={entry.hardlink_to!r}"


def validate(entries: Iterable[Entry], snapshot_id: str) -> int:
    """Check a whole tree (consuming it); the number of entries."""
    count = 0
    for _entry in checked(entries, snapshot_id):
        count += 1
    return count

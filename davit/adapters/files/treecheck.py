"""Checking a snapshot's tree before a restore trusts a single name of it.

In a plain repository trees are not authenticated: anyone who can write the repository can
publish a tree whose names say `../x`, `/etc/x`, `lnk/f` under a symlink `lnk`, or a hard link
to `../secret`. A walk never produces such an entry, so a tree holding one is corrupt, and the
restore fails at prepare, before anything is written (the policy of issue 14; the writer in
`confined.py` would refuse such names anyway, this makes the refusal early, whole and typed).

`checked` is one streaming pass in constant memory, except for the paths of entries with more
than one link (the hard-link targets a walk records). It enforces what the walk guarantees:
"." first and a directory; every other path "/"-joined components, none empty, ".", ".." or
holding NUL; strictly increasing walk order (so no duplicates); each entry's parent a directory
entry met earlier (so nothing lies under a symlink or a file); a hard link names an earlier
entry of the same non-directory type that had more than one link (or, for a file of a snapshot
made through a helper container, whose tar stream has no link counts, a well-formed path
earlier in walk order); known types; integers of
sane range; and `Entry.from_line`'s own failures (bad JSON, wrong field types, bad base64).
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Iterable, Iterator

from davit.adapters.repository.treeformat import DIR, FILE, LINK, TYPES, Entry
from davit.domain.errors import CorruptSnapshot

SHOWN = 160  # characters of an entry quoted in the error
U32, I64, U64 = (1 << 32) - 1, 1 << 63, (1 << 64) - 1
NAME_MAX = 255
DOTS = frozenset({"", ".", ".."})


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
            raise CorruptSnapshot(
                snapshot_id, _shown(line), f"does not parse ({type(exc).__name__}: {_shown(str(exc))})"
            ) from None
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


def _ints_sane(e: Entry) -> bool:
    """Every integer field an int (not a bool) in its range; written out, not looped: this runs
    once per entry on every pass of a restore."""
    m, mt, ct, u, g, s, i, d, r, n = e.mode, e.mtime_ns, e.ctime_ns, e.uid, e.gid, e.size, e.inode, e.dev, e.rdev, e.nlink
    return (
        type(m) is int
        and type(mt) is int
        and type(ct) is int
        and type(u) is int
        and type(g) is int
        and type(s) is int
        and type(i) is int
        and type(d) is int
        and type(r) is int
        and type(n) is int
        and 0 <= m <= 0o7777
        and -I64 <= mt < I64
        and -I64 <= ct < I64
        and 0 <= u <= U32
        and 0 <= g <= U32
        and 0 <= s < I64
        and 0 <= i <= U64
        and 0 <= d <= U64
        and 0 <= r <= U64
        and 1 <= n <= U64
    )


def _chunk_id(chunk: object) -> bool:
    if type(chunk) is not str or len(chunk) != 64:
        return False
    try:
        return len(bytes.fromhex(chunk)) == 32  # 64 characters, 32 bytes: hex digits only
    except ValueError:
        return False


def _problem(entry: Entry) -> str | None:
    """What is wrong with one entry's own fields (not its place in the tree), or None."""
    if type(entry.path) is not str or not (entry.hardlink_to is None or type(entry.hardlink_to) is str):
        return "path or hard link is not a string"
    if entry.type not in TYPES or type(entry.type) is not str:
        return "unknown type"
    if not _ints_sane(entry):
        return "an integer field (mode, time, owner, size, inode, device, link count) out of range"
    if entry.type == LINK:
        if type(entry.target) is not str or not entry.target or "\0" in entry.target or not _encodable(entry.target):
            return "a symlink without a valid target"
    elif entry.target is not None:
        return "a link target on an entry that is not a symlink"
    chunks = entry.chunks
    if type(chunks) is not list or (chunks and entry.type != FILE):
        return "chunks on an entry that is not a file"
    for chunk in chunks:
        if not _chunk_id(chunk):
            return "a chunk id that is not 64 hex digits"
    if entry.xattrs:
        for name in entry.xattrs:
            if type(name) is not str or not name or "\0" in name or not _encodable(name):
                return "an extended attribute without a valid name"
    elif type(entry.xattrs) is not dict:
        return "extended attributes that are not a mapping"
    return None


def _path_problem(path: str, parts: list[str]) -> str | None:
    """What is wrong with a non-root entry's path (split at "/" into `parts`), or None."""
    if not path:
        return "path is empty"
    if path[0] == "/":
        return "absolute path"
    if "\0" in path:
        return "path holds a NUL byte"
    for part in parts:
        if part in DOTS:
            return f"path has an empty, '.' or '..' component ({part!r})"
    if path.isascii():
        if len(path) <= NAME_MAX:
            return None  # the common case: nothing to encode, no component can be too long
        encoded = path.encode()
    else:
        try:
            encoded = os.fsencode(path)
        except UnicodeEncodeError:
            return "path is not encodable as a file name"
    if len(encoded) > NAME_MAX and any(len(part) > NAME_MAX for part in encoded.split(b"/")):
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
            reason = None if entry.path == "." and entry.type == DIR else "the first entry must be the root '.', a directory"
        else:
            parts = entry.path.split("/")
            reason = _path_problem(entry.path, parts)
            if reason is None:
                key = tuple(parts)
                reason = _place_problem(key, previous, dirs)
        if reason is None and entry.hardlink_to is not None:
            reason = _link_problem(entry, key, link_targets)
        if reason is not None:
            raise CorruptSnapshot(snapshot_id, _shown(_describe(entry)), reason)
        if entry.type == DIR:
            dirs.append(key)
        elif entry.nlink > 1:
            link_targets[entry.path] = entry.type
        previous = key
        yield entry


def _link_problem(entry: Entry, key: tuple[str, ...], link_targets: dict[str, str]) -> str | None:
    """Whether `entry`'s hard link may be trusted to name an earlier entry of the tree.

    A walk of the file system records the link count, so the first path is a multiply-linked
    entry of the same type. A snapshot made through a helper container (the engine's tar
    stream, which has no link counts) records its first path with one link: a file's link to
    a well-formed path earlier in walk order is accepted too. Either way the name stays inside
    the target, and the writer links only to a file this restore wrote there (else it writes
    the file whole, its content being stored with the link)."""
    assert entry.hardlink_to is not None
    first = link_targets.get(entry.hardlink_to)
    if entry.type != DIR and first == entry.type:
        return None
    if entry.type == FILE and first is None:
        parts = entry.hardlink_to.split("/")
        if _path_problem(entry.hardlink_to, parts) is None and tuple(parts) < key:
            return None
    return "a hard link to a path that is not an earlier entry of its type"


def _place_problem(key: tuple[str, ...], previous: tuple[str, ...], dirs: list[tuple[str, ...]]) -> str | None:
    """Whether `key` comes after `previous` with its parent on `dirs` (popped to that parent)."""
    if key <= previous:
        return "out of walk order (or a duplicate)"
    depth = len(key) - 1
    while len(dirs[-1]) > depth or dirs[-1] != key[: len(dirs[-1])]:
        dirs.pop()  # never the root's (): it is a prefix of every key
    if len(dirs[-1]) != depth:
        return "its parent is not a directory of the snapshot met before it"
    return None


def _describe(entry: Entry) -> str:
    return f"path={entry.path!r} type={entry.type!r} target={entry.target!r} hardlink_to={entry.hardlink_to!r}"


def validate(entries: Iterable[Entry]) -> int:
    """Run a `checked` stream to its end: the whole tree is checked; the number of entries."""
    count = 0
    for _entry in entries:
        count += 1
    return count

"""The fingerprint of an item on a source reached over SSH: `tarindex.fingerprint`'s, taken there.

A repeated (or retried) migration from an SSH source finds an unchanged item by the same
chunk list in the target's store as a local source does (`tarindex.py`), so it reads nothing
of it from the source host. The metadata is read there by GNU find (the source has GNU tar,
so it has GNU find as a rule; without it there is no fingerprint and the item is read as
before): per entry its relative path, type and mode, owner, size, inode, device, link count,
link target, and mtime and ctime in nanoseconds (a write to a file moves its ctime, which no
user can set back). The entries are sorted here, so the walk's order does not count.

Never trusted where it could be wrong, as `tarindex.fingerprint`: no fingerprint when an
entry changed within `tarindex.RACY_NS` of the walk by the source host's clock, when find
fails (an unreadable directory), or when its output cannot be read. The source's address and
the tar arguments are in the digest: another host's, or another export's, list is never taken.
"""

from __future__ import annotations

import hashlib
import shlex

from davit.adapters.compose.source import Item
from davit.adapters.compose.tarindex import RACY_NS, VERSION
from davit.adapters.ssh.remote import RemoteCommandFailed
from davit.adapters.ssh.threaded import ThreadedHost
from davit.domain.errors import DavitError

q = shlex.quote
# two NUL-ended fields per entry: "mtime ctime type mode uid gid size inode device links path", link target
FORMAT = r"%T@ %C@ %y %m %U %G %s %i %D %n %P\0%l\0"


def remote_fingerprint(host: ThreadedHost, item: Item, tar_args: list[str]) -> str | None:
    """The fingerprint of what `tar_args` would read of `item` on `host`, or None where it is not safe."""
    depth = " -maxdepth 0" if item.is_file else ""
    command = f"date +%s%N && printf '\\0' && LC_ALL=C find {q(item.source)}{depth} -printf {q(FORMAT)}"
    try:
        out = host.read_bytes(command)
    except (RemoteCommandFailed, DavitError):
        return None  # (tar will say what it cannot read)
    head, sep, listing = out.partition(b"\0")
    try:
        started = int(head.strip())
    except ValueError:
        return None
    fields = listing.split(b"\0")
    if not sep or len(fields) % 2 != 1 or fields[-1] != b"":
        return None  # cut short, or not GNU find's output
    entries = []
    for meta, link in zip(fields[0:-1:2], fields[1:-1:2], strict=True):
        parts = meta.split(b" ", 10)
        if len(parts) != 11:
            return None
        times = [_ns(t) for t in parts[:2]]
        if None in times or max(t for t in times if t is not None) > started - RACY_NS:
            return None
        entries.append(meta + b"\0" + link + b"\n")
    if not entries:
        return None
    digest = hashlib.sha256(VERSION + b"ssh " + host.address.where.encode() + b"\n")
    digest.update("\0".join(tar_args).encode() + b"\n")
    for entry in sorted(entries, key=lambda e: e.split(b" ", 10)[10]):
        digest.update(entry)
    return digest.hexdigest()


def _ns(text: bytes) -> int | None:
    """Nanoseconds from find's `%T@` ("1700000000.1234567890")."""
    seconds, _, fraction = text.partition(b".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        return None
    return int(seconds) * 1_000_000_000 + int((fraction + b"000000000")[:9])

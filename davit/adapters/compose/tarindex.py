"""Which chunks an item's tar stream is, without reading the item: the migration's repeat path.

A stopped source gives the same `tar c` stream every time its files are the same (names
sorted, numeric owners: `pipeline.tar_command`). So an item's stream can be named by a
fingerprint of its metadata, as a backup's change detection does: the sha256 of every entry's
relative path, type and mode, owner, size, link target, device, inode, link count, and its
mtime and ctime in nanoseconds (a write to a file moves its ctime, which no user can set back).
After an item went through the pipeline, `record` files the list of its chunks in the
target's store under that fingerprint; a later pass (a retried or repeated migration of the
same, unchanged data) that finds the list, with every chunk of it in the store, hands the
names to the unpacker straight away: no `tar c` of the item, no hashing, nothing sent.

Never trusted where it could be wrong: a fingerprint is not made (None: the item goes
through the pipeline as before) when any entry changed within `RACY_NS` of the walk (a
timestamp too coarse to see a second write in the same tick: git's "racy clean" rule), or when
the walk cannot read something. A list that is cut short or garbled (it is written without
fsync: it is a cache; the store's chunks are not) is not used: it ends with a line holding
its own count. This index is removed when the migration finalizes (the store's chunks stay as
a transfer cache, `target.prune_store`): a later migration reads its source again.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import time
from dataclasses import dataclass

from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import RemoteHost

VERSION = b"davit-tar-index 1\n"
RACY_NS = 2_000_000_000  # an entry changed less than this before the walk: no fingerprint
TARS = "tars"  # under the store, next to `chunks/`
q = shlex.quote


@dataclass(frozen=True)
class Listed:
    """An item's stream as a recorded list: its chunks in stream order and its plain length."""

    ids: list[str]
    plain_bytes: int


def fingerprint(item: Item, tar_args: list[str]) -> str | None:
    """The fingerprint of what `tar_args` would read of `item`, or None where it is not safe."""
    started = time.time_ns()
    digest = hashlib.sha256(VERSION + "\0".join(tar_args).encode() + b"\n")
    source = os.fsencode(item.source)
    try:
        if item.is_file:
            ok = _entry(digest, os.path.basename(source), source, started)
        else:
            ok = _entry(digest, b".", source, started) and _walk(digest, source, b".", started)
    except OSError:
        return None  # (tar will say what it cannot read)
    return digest.hexdigest() if ok else None


def _entry(digest: hashlib._Hash, rel: bytes, path: bytes, started: int) -> bool:
    st = os.lstat(path)
    if max(st.st_mtime_ns, st.st_ctime_ns) > started - RACY_NS:
        return False
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else b""
    fields = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    more = (st.st_nlink, st.st_rdev)
    digest.update(rel + b"\0" + " ".join(str(v) for v in fields + more).encode() + b"\0" + link + b"\n")
    return True


def _walk(digest: hashlib._Hash, top: bytes, rel: bytes, started: int) -> bool:
    """Every entry under `top`, depth first in name order; symbolic links are not followed."""
    with os.scandir(top) as it:
        entries = sorted((e.name, e.path, e.is_dir(follow_symlinks=False)) for e in it)
    for name, path, is_dir in entries:
        sub = rel + b"/" + name
        if not _entry(digest, sub, path, started):
            return False
        if is_dir and not _walk(digest, path, sub, started):
            return False
    return True


def path(store: str, key: str) -> str:
    return f"{store}/{TARS}/{key}"


def lookup(host: RemoteHost, store: str, key: str) -> Listed | None:
    """The list recorded under `key` in the target's store; None if there is none (or it is cut short)."""
    return parse(host.run(f"cat {q(path(store, key))} 2>/dev/null; true").stdout.splitlines())


def parse(out: list[str]) -> Listed | None:
    """A recorded list from its lines; None if it is cut short or garbled."""
    if len(out) < 2 or not out[0].startswith("bytes ") or out[-1] != f"end {len(out) - 2}":
        return None
    ids = out[1:-1]
    # ASCII digits only: `str.isdigit` also takes a superscript (which `int` refuses) and other
    # scripts' digits (which `int` reads as another number)
    if not (out[0][6:].isascii() and out[0][6:].isdigit()) or not all(
        len(i) == 64 and all(c in "0123456789abcdef" for c in i) for i in ids
    ):
        return None
    return Listed(ids, int(out[0][6:]))


def body(ids: list[str], plain_bytes: int) -> str:
    """The recorded list's text: its sha256 names the stream (`unpacked.stream_id`)."""
    return f"bytes {plain_bytes}\n" + "".join(f"{i}\n" for i in ids) + f"end {len(ids)}\n"


def record(host: RemoteHost, store: str, key: str, ids: list[str], plain_bytes: int) -> None:
    """File the item's chunk list under `key` (after every chunk of it is in the store)."""
    host.write_file(path(store, key), body(ids, plain_bytes).encode(), 0o600)

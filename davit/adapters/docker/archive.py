"""Tar streams of the engine's archive API, read as tree entries and written from them.

Reading: `volume_archive_entries` turns the tar of a mounted volume into the entries of the
files walk (same paths, modes, owners, sizes, symlink targets, FIFOs and device nodes, and the
extended attributes the engine puts in the stream), each file with a reader of
its content that is valid until the next entry is taken (`tarread`), so the files backup's
store step chunks the stream exactly as it chunks a file. The engine's archive is in walk
order (directories sorted by name, depth first), which the resume cursor relies on; an
entry out of order fails the run rather than corrupting the cursor. Its mtimes are whole
seconds, and it has no inode or ctime.

Writing: `tar_header` gives the PAX header of an entry (mtime to the nanosecond), so a
restore streams headers and verified chunks without ever holding a whole file.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from davit.adapters.docker.helper import MOUNT_ROOT, ChunkReader, mounted_path, open_archive
from davit.adapters.docker.tarread import Content, members
from davit.adapters.files.tree import Skipped, is_excluded
from davit.adapters.repository.treeformat import BLOCK as BLOCK_DEVICE
from davit.adapters.repository.treeformat import CHAR, DIR, FIFO, FILE, LINK, Entry, walk_key
from davit.domain.errors import PermanentError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
TAR_TYPES = {
    DIR: tarfile.DIRTYPE,
    FILE: tarfile.REGTYPE,
    LINK: tarfile.SYMTYPE,
    FIFO: tarfile.FIFOTYPE,
    CHAR: tarfile.CHRTYPE,
    BLOCK_DEVICE: tarfile.BLKTYPE,
}


class ArchiveOutOfOrder(PermanentError):
    """The engine's archive did not come in walk order, so a resume cursor would be wrong."""


def _mtime_ns(member: tarfile.TarInfo) -> int:
    exact = member.pax_headers.get("mtime")
    if exact is not None:
        return int(Decimal(exact) * 1_000_000_000)
    return int(member.mtime) * 1_000_000_000


XATTR = "SCHILY.xattr."  # the PAX records of extended attributes, as the engine writes and reads them


def _entry(member: tarfile.TarInfo, path: str, kind: str, size: int = 0) -> Entry:
    return Entry(
        path=path,
        type=kind,
        mode=stat.S_IMODE(member.mode),
        mtime_ns=_mtime_ns(member),
        size=size,
        uid=member.uid,
        gid=member.gid,
        target=member.linkname if kind == LINK else None,
        rdev=os.makedev(member.devmajor, member.devminor) if kind in (CHAR, BLOCK_DEVICE) else 0,
        xattrs={
            key[len(XATTR) :]: value.encode("utf-8", "surrogateescape")
            for key, value in member.pax_headers.items()
            if key.startswith(XATTR)
        },
    )


def _linked_content(links: Callable[[], Any], member: tarfile.TarInfo, path: str) -> Iterator[tuple[Entry, Content]]:
    """A hard link's content, read through an archive of its target from a second helper (the
    stream only names the target), so a linked file is stored like any file, as the
    mountpoint walk stores it."""
    what = f"reading hard link {path}"
    reader = open_archive(links(), f"{MOUNT_ROOT}/{member.linkname}", what)
    try:
        for target, content in members(reader, what):
            if content is not None:
                entry = _entry(member, path, FILE, target.size)
                entry.hardlink_to = member.linkname  # the first path of the inode, as the walk records it
                yield entry, content
            return
    finally:
        reader.close()


def volume_archive_entries(
    container: Any, volume: str, exclude: list[str], links: Callable[[], Any], after: tuple[str, ...] | None = None
) -> Iterator[tuple[Entry, Content | None] | Skipped]:
    """The entries of the volume mounted in `container`, as "VOLUME" and "VOLUME/..." paths;
    `links()` gives a second helper with the same mounts, for hard links.

    Entries at or before `after` (a resume cursor) are passed over: the staging tree holds them.
    """
    what = f"reading volume {volume} through a helper"
    reader: ChunkReader = open_archive(container, mounted_path(volume), what)
    previous: tuple[str, ...] | None = None
    excluded_dir: str | None = None
    try:
        for member, content in members(reader, what):
            path = member.name.rstrip("/")
            if path != volume and not path.startswith(volume + "/"):
                raise ArchiveOutOfOrder(f"volume {volume}: the engine's archive holds {path}, outside it")
            key = walk_key(path)
            if previous is not None and key <= previous:
                raise ArchiveOutOfOrder(
                    f"volume {volume}: the engine's archive gave {path} after {'/'.join(previous)}; it must come in walk order"
                )
            previous = key
            if excluded_dir is not None and path.startswith(excluded_dir):
                continue
            excluded_dir = None
            if path != volume and is_excluded(path, path.rsplit("/", 1)[-1], exclude):
                excluded_dir = path + "/" if member.isdir() else None
                continue
            if after is not None and key <= after:
                continue
            if member.isdir():
                yield _entry(member, path, DIR), None
            elif content is not None:
                yield _entry(member, path, FILE, member.size), content
            elif member.issym():
                yield _entry(member, path, LINK), None
            elif member.islnk():
                yield from _linked_content(links, member, path)
            elif member.isfifo():
                yield _entry(member, path, FIFO), None
            elif member.ischr() or member.isblk():
                yield _entry(member, path, CHAR if member.ischr() else BLOCK_DEVICE), None
            else:
                yield Skipped(path, "not a regular file, directory, symlink, FIFO or device node")
    finally:
        reader.close()


def tar_header(entry: Entry, name: str, hardlink_to: str | None = None) -> bytes:
    """The PAX header block(s) of `entry` stored as `name`; with `hardlink_to`, a hard link to
    that member (no content follows). Every entry type of the files walk has its tar type (a
    mountpoint snapshot holds FIFOs and device nodes, made by the engine as it unpacks), and
    extended attributes go as `SCHILY.xattr.*` records (`XATTR`), which the engine sets as it unpacks."""
    info = tarfile.TarInfo(name)
    info.type = TAR_TYPES[entry.type]
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.size = entry.size if entry.type == FILE else 0
    info.linkname = entry.target or "" if entry.type == LINK else ""
    if entry.type in (CHAR, BLOCK_DEVICE):
        info.devmajor, info.devminor = os.major(entry.rdev), os.minor(entry.rdev)
    if hardlink_to is not None and entry.type == FILE:
        info.type, info.linkname, info.size = tarfile.LNKTYPE, hardlink_to, 0
    seconds, nanos = divmod(entry.mtime_ns, 1_000_000_000)
    info.mtime = seconds
    pax = {f"{XATTR}{key}": value.decode("utf-8", "surrogateescape") for key, value in entry.xattrs.items()}
    if nanos:
        pax["mtime"] = f"{seconds}.{nanos:09d}"
    info.pax_headers = pax
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)

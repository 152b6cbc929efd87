"""A backup captures what restic keeps: extended attributes of every namespace (POSIX ACLs
included), FIFOs, device nodes, and hard links between symlinks, FIFOs and devices.

These tests need root (trusted.* and security.capability xattrs, mknod); CI runs as root.
Round trip (backup, then restore): `test_files_fidelity_roundtrip.py`.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import BLOCK, CHAR, DIR, FIFO, FILE, LINK, Entry, read_lines
from tests.integration.test_files_adapter import backup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: trusted.* xattrs, capabilities, mknod")

ACL_UNDEFINED_ID = 0xFFFFFFFF
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def acl_blob(*entries: tuple[int, int, int]) -> bytes:
    """A `system.posix_acl_*` value as the kernel takes it: version 2, then (tag, perm, id)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in entries)


ACCESS_ACL = acl_blob(
    (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
    (ACL_USER, 4, 1234),
    (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
    (ACL_MASK, 4, ACL_UNDEFINED_ID),
    (ACL_OTHER, 0, ACL_UNDEFINED_ID),
)
DEFAULT_ACL = acl_blob(
    (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID), (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID), (ACL_OTHER, 5, ACL_UNDEFINED_ID)
)
# struct vfs_cap_data, revision 2, effective: cap_net_raw (13) permitted, as on /bin/ping
NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def make_fidelity_tree(root: Path) -> None:
    """Every kind of entry and attribute a restore must keep, as root."""
    root.mkdir()
    os.setxattr(root, "user.on-root", b"the root directory's own")
    (root / "ping").write_bytes(b"\x7fELF pretend binary")
    os.chmod(root / "ping", 0o755)
    os.setxattr(root / "ping", "security.capability", NET_RAW)
    (root / "doc.txt").write_text("with attributes\n")
    os.setxattr(root / "doc.txt", "user.comment", b"user namespace")
    os.setxattr(root / "doc.txt", "user.binary", bytes(range(256)))
    os.setxattr(root / "doc.txt", "trusted.origin", b"trusted namespace")
    os.setxattr(root / "doc.txt", "system.posix_acl_access", ACCESS_ACL)
    (root / "shared").mkdir()
    os.setxattr(root / "shared", "system.posix_acl_default", DEFAULT_ACL)
    os.setxattr(root / "shared", "user.dir", b"on a directory")
    os.mkfifo(root / "pipe", 0o640)
    os.link(root / "pipe", root / "pipe-again")
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    os.chmod(root / "null", 0o666)  # past the umask
    os.mknod(root / "loop7", 0o660 | stat.S_IFBLK, os.makedev(7, 7))
    os.chmod(root / "loop7", 0o660)
    os.chown(root / "loop7", 0, 6)
    os.symlink("doc.txt", root / "link")
    os.setxattr(root / "link", "trusted.on-link", b"a symlink's own", follow_symlinks=False)
    os.link(root / "link", root / "link-again", follow_symlinks=False)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
    for i, p in enumerate([*sorted(root.rglob("*"), reverse=True), root]):
        os.utime(p, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i * 1000), follow_symlinks=False)


def stored_entries(repo: Repository, snapshot: str = "latest") -> dict[str, Entry]:
    return {e.path: e for e in read_lines(repo.open_tree(repo.resolve(snapshot)))}


def xattrs_of(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


def test_every_kind_of_entry_and_attribute_is_captured_in_the_snapshot(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_fidelity_tree(source)
    repo = Repository.open(tmp_path / "repo")
    ctx = backup(repo, source, "b1")
    entries = stored_entries(repo)
    assert sorted(entries) == [".", "doc.txt", "link", "link-again", "loop7", "null", "ping", "pipe", "pipe-again", "shared"]
    assert [w for w in ctx.warnings if "sock" in w] == ["skipped sock: a socket: not stored"]

    # Every namespace, binary values intact; the ACLs as the kernel returns them.
    assert entries["."].xattrs == {"user.on-root": b"the root directory's own"}
    assert entries["doc.txt"].xattrs == {
        "user.comment": b"user namespace",
        "user.binary": bytes(range(256)),
        "trusted.origin": b"trusted namespace",
        "system.posix_acl_access": os.getxattr(source / "doc.txt", "system.posix_acl_access"),
    }
    assert entries["ping"].xattrs == {"security.capability": NET_RAW}
    assert entries["shared"].xattrs == {"system.posix_acl_default": DEFAULT_ACL, "user.dir": b"on a directory"}
    assert entries["link"].xattrs == {"trusted.on-link": b"a symlink's own"}
    for path, entry in entries.items():
        assert entry.xattrs == xattrs_of(source / path), path

    # FIFOs and devices, with their numbers, modes and owners.
    assert (entries["pipe"].type, entries["pipe"].mode) == (FIFO, 0o640)
    null = entries["null"]
    assert (null.type, null.rdev, null.mode) == (CHAR, os.stat("/dev/null").st_rdev, 0o666)
    loop = entries["loop7"]
    assert (loop.type, loop.rdev, loop.mode, loop.gid) == (BLOCK, os.makedev(7, 7), 0o660, 6)
    assert entries["shared"].type == DIR and entries["doc.txt"].type == FILE

    # Hard links among symlinks and FIFOs: the second name points at the first.
    assert (entries["link"].type, entries["link"].target, entries["link"].nlink) == (LINK, "doc.txt", 2)
    assert entries["link-again"].hardlink_to == "link" and entries["link"].hardlink_to is None
    assert entries["pipe-again"].hardlink_to == "pipe" and entries["pipe"].nlink == 2
    assert entries["link"].dev == entries["link-again"].dev == source.stat().st_dev

    # Every entry's line reads back as the same entry (the format carries all of it).
    for entry in entries.values():
        assert Entry.from_line(entry.to_line()) == entry
    manifest = repo.resolve("latest")
    assert manifest.stats["specials"] == 4 and manifest.stats["links"] == 2


def test_a_change_of_only_an_extended_attribute_is_in_the_next_snapshot(tmp_path: Path) -> None:
    """The files cache (size, mtime, ctime, inode) still holds: setting an xattr bumps ctime, so
    a file whose attributes changed is never taken for unchanged (its attributes are read again)."""
    source = tmp_path / "src"
    make_fidelity_tree(source)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    before = os.stat(source / "doc.txt")
    os.setxattr(source / "doc.txt", "user.comment", b"changed, and nothing else")
    os.setxattr(source / "shared", "user.added", b"new on the directory")
    after = os.stat(source / "doc.txt")
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    second = backup(repo, source, "b2")
    entries = stored_entries(repo, "b2")
    assert entries["doc.txt"].xattrs["user.comment"] == b"changed, and nothing else"
    assert entries["shared"].xattrs["user.added"] == b"new on the directory"
    assert stored_entries(repo, "b1")["doc.txt"].xattrs["user.comment"] == b"user namespace"
    assert second.chunks_written == []  # the content is the same: no chunk is stored again


def test_an_unchanged_file_keeps_its_attributes_without_reading_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged backup reads no file's extended attributes: an unchanged file (same inode,
    mtime and ctime) has the ones the previous snapshot recorded. Directories are read again."""
    import davit.adapters.files.backup as files_backup
    import davit.adapters.files.tree as tree

    source = tmp_path / "src"
    make_fidelity_tree(source)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    read: list[object] = []
    real = tree.read_xattrs

    def counting(target: int | str) -> tuple[dict[str, bytes], str | None]:
        read.append(target)
        return real(target)

    monkeypatch.setattr(tree, "read_xattrs", counting)  # directories, links, FIFOs, devices
    monkeypatch.setattr(files_backup, "read_xattrs", counting)  # files, from the descriptor read
    backup(repo, source, "b2")
    first, second = stored_entries(repo, "b1"), stored_entries(repo, "b2")
    assert {p: e.xattrs for p, e in second.items()} == {p: e.xattrs for p, e in first.items()}
    files = [p for p, e in second.items() if e.type == "f"]
    assert files and second["doc.txt"].xattrs
    assert len(read) == len(second) - len(files)  # every entry but the unchanged files

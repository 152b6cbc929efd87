"""Backup, then restore with `FilesRestoreWork`: the restored tree equals the source field by
field (type, mode, owner, mtime, content, link target, device number, every extended attribute
with the POSIX ACLs, and which names share an inode), on the tree of
`test_files_fidelity_capture.make_fidelity_tree` (every kind of entry restic keeps).

Needs root (trusted.* and security.* xattrs, device nodes, owners); CI runs as root.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.test_files_adapter import backup, restore
from tests.integration.test_files_fidelity_capture import make_fidelity_tree, xattrs_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: trusted.* xattrs, capabilities, mknod")


def fingerprint(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must give back, per relative path ("." is the root itself)."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        rel = "." if path == root else str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISSOCK(st.st_mode):
            continue  # never stored: reported as skipped
        if stat.S_ISREG(st.st_mode):
            what: object = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            what = os.readlink(path)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            what = st.st_rdev
        else:
            what = None
        first = inodes.setdefault((st.st_dev, st.st_ino), rel) if not stat.S_ISDIR(st.st_mode) else rel
        out[rel] = (
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            what,
            xattrs_of(path),
            first,
        )
    return out


def test_a_restored_tree_keeps_xattrs_acls_capabilities_fifos_devices_and_hard_linked_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_fidelity_tree(source)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    _work, ctx = restore(repo, tmp_path / "out")
    restored, expected = fingerprint(tmp_path / "out"), fingerprint(source)
    assert sorted(restored) == sorted(expected)
    for rel in expected:
        assert restored[rel] == expected[rel], rel
    assert not ctx.warnings  # nothing was refused by the target's file system

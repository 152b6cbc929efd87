"""A restore applies what restic keeps (issue 14 finding 12, the apply side): extended attributes
of every namespace (user, trusted, security.capability), POSIX ACLs (access and default),
FIFOs, device nodes, and hard links between symlinks and between FIFOs, through descriptors.

The snapshot is written by hand (the capture side is another test's), so this test stands on
its own. It runs as root, as CI does: trusted.* and security.* xattrs, owners and device nodes
are restored only when davitd is root. What the file system refuses (a user.* xattr on a FIFO:
Linux allows user attributes only on files and directories) is a warning naming the path and
the attribute, and the run succeeds.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.crafted_trees import file_line, publish, run_restore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes, trusted.* and security.* need root")

MT = 1_650_000_000_123_456_789
# security.capability: VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13): `ping`'s
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL xattr value: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


UNDEF = 0xFFFFFFFF
ACCESS_ACL = acl((0x01, 6, UNDEF), (0x02, 6, 1000), (0x04, 4, UNDEF), (0x10, 6, UNDEF), (0x20, 4, UNDEF))
DEFAULT_ACL = acl((0x01, 7, UNDEF), (0x04, 5, UNDEF), (0x08, 5, 2000), (0x10, 5, UNDEF), (0x20, 0, UNDEF))


def b64(value: bytes) -> str:
    import base64

    return base64.b64encode(value).decode()


def lines(repo: Repository) -> list[dict[str, Any]]:
    null_rdev = os.stat("/dev/null").st_rdev
    return [
        {"p": ".", "t": "d", "m": 0o755, "mt": MT},
        {
            "p": "cap-ping",
            **{k: v for k, v in file_line(repo, "cap-ping", b"\x7fELF a program").items() if k != "p"},
            "m": 0o755,
            "mt": MT + 1,
            "u": 1234,
            "g": 5678,
            "x": {"security.capability": b64(CAPABILITY), "user.comment": b64(b"kept"), "trusted.note": b64(b"\x00\xff")},
        },
        {
            "p": "fifo",
            "t": "p",
            "m": 0o640,
            "mt": MT + 2,
            "u": 42,
            "g": 43,
            "n": 2,
            "dv": 1,
            "x": {"user.refused": b64(b"no user xattrs on a FIFO"), "trusted.kept": b64(b"yes")},
        },
        {
            "p": "fifo-link",
            "t": "p",
            "m": 0o640,
            "mt": MT + 2,
            "u": 42,
            "g": 43,
            "n": 2,
            "dv": 1,
            "h": "fifo",
            "x": {"user.refused": b64(b"no user xattrs on a FIFO"), "trusted.kept": b64(b"yes")},
        },
        {"p": "null", "t": "c", "m": 0o666, "mt": MT + 3, "r": null_rdev, "u": 0, "g": 0},
        {
            "p": "shared",
            "t": "d",
            "m": 0o2775,
            "mt": MT + 4,
            "u": 1000,
            "g": 2000,
            "x": {"system.posix_acl_default": b64(DEFAULT_ACL), "user.dir": b64(b"on a directory")},
        },
        {
            "p": "shared/acl.txt",
            **{k: v for k, v in file_line(repo, "x", b"with an ACL").items() if k != "p"},
            "m": 0o664,
            "mt": MT + 5,
            "x": {"system.posix_acl_access": b64(ACCESS_ACL)},
        },
        {
            "p": "sl-a",
            "t": "l",
            "m": 0o777,
            "mt": MT + 6,
            "l": "cap-ping",
            "n": 2,
            "dv": 1,
            "u": 7,
            "g": 8,
            "x": {"trusted.link": b64(b"on the symlink itself")},
        },
        {
            "p": "sl-b",
            "t": "l",
            "m": 0o777,
            "mt": MT + 6,
            "l": "cap-ping",
            "n": 2,
            "dv": 1,
            "u": 7,
            "g": 8,
            "h": "sl-a",
            "x": {"trusted.link": b64(b"on the symlink itself")},
        },
    ]


def observed(path: Path) -> dict[str, Any]:
    st = os.lstat(path)
    follow = not stat.S_ISLNK(st.st_mode)
    return {
        "type": stat.S_IFMT(st.st_mode),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime": st.st_mtime_ns,
        "rdev": st.st_rdev if stat.S_ISCHR(st.st_mode) else 0,
        "xattrs": {n: os.getxattr(path, n, follow_symlinks=follow) for n in os.listxattr(path, follow_symlinks=follow)},
        "target": os.readlink(path) if not follow else None,
    }


def test_xattrs_acls_fifos_devices_and_linked_symlinks_are_restored_field_by_field(tmp_path: Path) -> None:
    import base64

    repo = Repository.open(tmp_path / "repo")
    snapshot = lines(repo)
    publish(repo, "s1", snapshot)  # type: ignore[arg-type]
    target = tmp_path / "target"
    ctx = run_restore(repo, target, "s1")
    for line in snapshot[1:]:
        got = observed(target / line["p"])
        kind = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "p": stat.S_IFIFO, "c": stat.S_IFCHR}
        want_xattrs = {n: base64.b64decode(v) for n, v in line.get("x", {}).items() if n != "user.refused"}
        assert got["type"] == kind[line["t"]], line["p"]
        assert got["mtime"] == line["mt"], line["p"]
        assert (got["uid"], got["gid"]) == (line.get("u", 0), line.get("g", 0)), line["p"]
        if line["t"] != "l":
            assert got["mode"] == line["m"], line["p"]
        assert got["xattrs"] == want_xattrs, line["p"]
        assert got["rdev"] == line.get("r", 0), line["p"]
        assert got["target"] == line.get("l"), line["p"]
    assert (target / "cap-ping").read_bytes() == b"\x7fELF a program"
    assert os.lstat(target / "sl-a").st_ino == os.lstat(target / "sl-b").st_ino  # one inode, as in the source
    assert os.lstat(target / "fifo").st_ino == os.lstat(target / "fifo-link").st_ino
    assert os.lstat(target / "sl-a").st_nlink == 2
    # refused by the file system: a warning naming the path and the attribute, and the run succeeded
    assert [w for w in ctx.warnings if "user.refused" in w] == [
        f"{target / 'fifo'}: extended attribute user.refused not restored: Operation not permitted"
    ]

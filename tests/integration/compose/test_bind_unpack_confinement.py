"""A bind path is unpacked on the target by the host's GNU tar as root, with the flags davit uses
(`BIND_UNPACK`): whatever the stream holds and whatever the target directory already holds,
nothing outside that directory is created or changed (guarantee 13)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from davit.adapters.compose.source import Item
from davit.adapters.compose.target import BIND_UNPACK, unpacker_for


def fingerprint(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    found: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            content: bytes | str = os.readlink(path) if path.is_symlink() else (path.read_bytes() if path.is_file() else b"")
            found[str(path.relative_to(root))] = (st.st_mode, st.st_nlink, content)
    return found


def member(
    tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def unpack(dest: Path, stream: bytes) -> subprocess.CompletedProcess[bytes]:
    item = Item("bind-0", "bind", "/src/data", str(dest))
    command = unpacker_for(None, item, "unused", "shop")  # type: ignore[arg-type]  # a bind needs no host call
    assert BIND_UNPACK in command
    return subprocess.run(["sh", "-c", command], input=stream, capture_output=True, check=False)


def test_a_crafted_stream_and_a_planted_symlink_write_nothing_outside_the_bind_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    os.chmod(outside, 0o755)
    dest = tmp_path / "target" / "data"
    dest.mkdir(parents=True)
    (dest / "sub").symlink_to(outside)  # planted by a container with the bind mounted

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        member(tar, "./sub", kind=tarfile.DIRTYPE, mode=0o777)
        member(tar, "./sub/f.txt", b"data")
        member(tar, "./lnk", kind=tarfile.SYMTYPE, link=str(outside))
        member(tar, "./lnk/pwn", b"through the link", mode=0o4755)
        member(tar, "../up", b"climbing")
        member(tar, str(outside / "abs"), b"absolute")
        member(tar, "./hard", kind=tarfile.LNKTYPE, link=str(outside / "keep.txt"))
    before = fingerprint(outside)

    unpack(dest, buf.getvalue())

    assert fingerprint(outside) == before
    assert os.stat(outside).st_mode & 0o777 == 0o755
    assert (dest / "sub").is_dir() and not (dest / "sub").is_symlink()
    assert (dest / "sub" / "f.txt").read_bytes() == b"data"
    assert not (tmp_path / "target" / "up").exists()

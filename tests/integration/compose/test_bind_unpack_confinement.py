"""A bind path is unpacked on the target through a helper container with its directory mounted,
with the flags davit uses (`BIND_UNPACK`): whatever the stream holds and whatever the target
directory already holds, nothing outside that directory is created or changed (guarantee 13)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from davit.adapters.compose.source import Item
from davit.adapters.compose.target import BIND_UNPACK, unpacker_for
from tests.peers.state import DockerPeer


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


def unpack(peer: DockerPeer, dest: Path, stream: bytes) -> subprocess.CompletedProcess[bytes]:
    item = Item("bind-0", "bind", "/src/data", str(dest))
    command = unpacker_for(None, item, peer.image, "shop")  # type: ignore[arg-type]  # a bind needs no host call
    assert BIND_UNPACK in command
    env = {**os.environ, "DOCKER_HOST": peer.host}
    return subprocess.run(["sh", "-c", command], input=stream, capture_output=True, check=False, env=env)


def test_a_crafted_stream_and_a_planted_symlink_write_nothing_outside_the_bind_directory(
    docker_peer: DockerPeer, tmp_path: Path
) -> None:
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

    unpack(docker_peer, dest, buf.getvalue())

    assert fingerprint(outside) == before
    assert os.stat(outside).st_mode & 0o777 == 0o755
    # the helper's tar (busybox here) may leave the planted symlink and write `sub/f.txt` through
    # it: that resolves in the helper's own file system, never on the host (checked above)
    assert not (tmp_path / "target" / "up").exists()


def test_owners_modes_mtimes_and_links_are_kept_through_the_helper(docker_peer: DockerPeer, tmp_path: Path) -> None:
    """What the host's `tar -x --same-owner -p` kept, the helper's root keeps: numeric owners (the
    stream has no names), modes with set-id bits, file mtimes, symlinks as links."""
    dest = tmp_path / "target" / "data"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, mode in [
            ("./d", tarfile.DIRTYPE, 0o2750),
            ("./d/f", tarfile.REGTYPE, 0o4711),
            ("./l", tarfile.SYMTYPE, 0o777),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, 1234, 5678, 1_000_000_000
            info.linkname = "d/f" if kind == tarfile.SYMTYPE else ""
            info.size = 4 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"data") if kind == tarfile.REGTYPE else None)

    done = unpack(docker_peer, dest, buf.getvalue())

    assert done.returncode == 0, done.stderr
    d, f = os.lstat(dest / "d"), os.lstat(dest / "d" / "f")
    assert (d.st_mode & 0o7777, d.st_uid, d.st_gid) == (0o2750, 1234, 5678)
    # a directory's mtime is kept only where the helper's tar sets it once its entries are
    # written (GNU tar does; busybox's, as for volumes, does not)
    assert (f.st_mode & 0o7777, f.st_uid, f.st_gid, int(f.st_mtime)) == (0o4711, 1234, 5678, 1_000_000_000)
    assert os.readlink(dest / "l") == "d/f"  # its owner: as the helper's tar sets it (busybox: root)
    assert (dest / "d" / "f").read_bytes() == b"data"

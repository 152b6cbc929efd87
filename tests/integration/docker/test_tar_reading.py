"""The helper path's tar reading and writing, on archives made here (no engine needed): what
the engine sends in odd-sized pieces comes out member by member with exact reads, and the
headers a helper restore writes read back as the entries they came from."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator

import pytest

from davit.adapters.docker.archive import END_OF_ARCHIVE, padding, tar_header
from davit.adapters.docker.engine import EngineUnreachable
from davit.adapters.docker.tarread import members
from davit.adapters.repository.treeformat import DIR, FILE, LINK, Entry

LONG = "deep/" + "a-rather-long-directory-name/" * 5 + "file-with-ünïcode name.txt"


class Pieces:
    """Hands out `data` in pieces of the given sizes, in turn, like the engine's stream."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.at, self.turn = data, sizes, 0, 0

    def read(self, size: int = -1) -> bytes:
        n = self.sizes[self.turn % len(self.sizes)]
        self.turn += 1
        piece = self.data[self.at : self.at + n]
        self.at += len(piece)
        return piece


def archive(files: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "target/of/link"
        tar.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize("sizes", [[1 << 20], [7, 513, 100_000], [1]], ids=["big-pieces", "odd-pieces", "bytes"])
def test_members_come_with_exact_reads_whatever_the_piece_sizes(sizes: list[int]) -> None:
    big = os.urandom(300_001)
    files = {"small.txt": b"hello\n", LONG: big, "empty": b""}
    got: dict[str, list[bytes]] = {}
    for info, content in members(Pieces(archive(files), sizes), "test"):
        if content is not None:
            got[info.name] = list(iter(lambda c=content: c.read(65_536), b""))  # type: ignore[misc]
    assert {name: b"".join(parts) for name, parts in got.items()} == files
    assert [len(p) for p in got[LONG]] == [65_536] * 4 + [300_001 - 4 * 65_536], "reads are exact until the end"


def test_content_left_unread_is_skipped() -> None:
    files = {"a": os.urandom(5000), "b": b"second"}
    names = []
    for info, content in members(Pieces(archive(files), [999]), "test"):
        names.append(info.name)
        if info.name == "b":
            assert content is not None and content.read() == b"second"
    assert names == ["a", "b", "link"]


def test_gnu_long_names_are_read_too() -> None:
    found = [info.name for info, _ in members(Pieces(archive({LONG: b"x"}, tarfile.GNU_FORMAT), [4096]), "t")]
    assert found == [LONG, "link"]


def test_an_archive_cut_inside_a_file_is_a_retryable_engine_error() -> None:
    data = archive({"big": os.urandom(100_000)})[:20_000]
    with pytest.raises(EngineUnreachable, match="ended inside the file"):
        for _info, content in members(Pieces(data, [4096]), "test"):
            if content is not None:
                content.read(100_000)


def written(entries: list[tuple[Entry, bytes]]) -> Iterator[bytes]:
    for entry, data in entries:
        yield tar_header(entry, entry.path)
        yield data
        yield padding(len(data))
    yield END_OF_ARCHIVE


def test_restore_headers_read_back_with_mode_owner_link_and_nanosecond_mtime() -> None:
    entries = [
        (Entry(path="d", type=DIR, mode=0o750, mtime_ns=1_000_000_000_123_456_789, uid=3, gid=4), b""),
        (Entry(path="d/" + LONG, type=FILE, mode=0o4755, mtime_ns=1_600_000_000_000_000_001, size=3, uid=123, gid=456), b"abc"),
        (Entry(path="d/l", type=LINK, mode=0o777, mtime_ns=5_000_000_000, target="../elsewhere"), b""),
    ]
    with tarfile.open(fileobj=io.BytesIO(b"".join(written(entries))), mode="r:") as tar:
        back = tar.getmembers()
        assert tar.extractfile(back[1]).read() == b"abc"  # type: ignore[union-attr]
    assert [m.name for m in back] == [e.path for e, _ in entries]
    assert back[0].pax_headers["mtime"] == "1000000000.123456789"
    assert back[1].pax_headers["mtime"] == "1600000000.000000001"
    assert (back[1].mode, back[1].uid, back[1].gid, back[1].size) == (0o4755, 123, 456, 3)
    assert back[2].issym() and back[2].linkname == "../elsewhere" and "mtime" not in back[2].pax_headers

"""Reading a tar stream member by member, in constant memory and with one copy of the data.

`tarfile`'s stream mode keeps every member it has seen (a list that grows with the volume)
and copies each piece of content three or four times; here headers are still parsed by
`tarfile.TarInfo` (ustar, PAX and GNU long names alike), but nothing is kept, and a
member's content is cut straight from the engine's chunks. `read(n)` returns exactly `n`
bytes until the member ends, as a file does, so chunk boundaries (and chunk ids) are those
of the same file read from disk.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Protocol

from davit.adapters.docker.engine import EngineUnreachable

BLOCK = tarfile.BLOCKSIZE


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Buffered:
    """Exact reads over a source that hands out pieces of any size."""

    def __init__(self, source: Source, what: str) -> None:
        self._source, self._what = source, what
        self._piece = memoryview(b"")
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        """`size` bytes, fewer only at the end of the stream."""
        if len(self._piece) >= size:
            out = bytes(self._piece[:size])
            self._piece = self._piece[size:]
        else:
            parts, held = [bytes(self._piece)], len(self._piece)
            self._piece = memoryview(b"")
            while held < size:
                piece = self._source.read(size - held)
                if not piece:
                    break
                take = min(len(piece), size - held)
                parts.append(piece[:take] if take < len(piece) else piece)
                self._piece = memoryview(piece)[take:]
                held += take
            out = b"".join(parts)
        self._pos += len(out)
        return out

    def skip(self, size: int) -> None:
        while size > 0:
            got = len(self.read(min(size, 1 << 20)))
            if got == 0:
                raise EngineUnreachable(f"{self._what}: the archive ended early")
            size -= got


class _Headers:
    """What `TarInfo.fromtarfile` uses of a `TarFile`."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, fileobj: _Buffered) -> None:
        self.fileobj = fileobj
        self.pax_headers: dict[str, str] = {}
        self.offset = 0


class Content:
    """One member's content; valid until the next member is taken."""

    def __init__(self, buffered: _Buffered, size: int, what: str) -> None:
        self._buffered, self.left, self._what = buffered, size, what

    def read(self, size: int = -1) -> bytes:
        want = self.left if size < 0 else min(size, self.left)
        if want <= 0:
            return b""
        data = self._buffered.read(want)
        if len(data) < want:
            raise EngineUnreachable(f"{self._what}: the archive ended inside the file")
        self.left -= len(data)
        return data


def members(source: Source, what: str) -> Iterator[tuple[tarfile.TarInfo, Content | None]]:
    """Each member with its content (regular files only) until the end-of-archive blocks."""
    buffered = _Buffered(source, what)
    headers = _Headers(buffered)
    while True:
        try:
            info = tarfile.TarInfo.fromtarfile(headers)  # type: ignore[arg-type]
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):  # type: ignore[attr-defined]
            return
        except tarfile.HeaderError as exc:
            raise EngineUnreachable(f"{what}: the archive has a broken header: {exc}") from exc
        content = Content(buffered, info.size, f"{what}: {info.name}") if info.isreg() else None
        yield info, content
        unread = content.left if content is not None else (info.size if info.type not in _NO_DATA else 0)
        buffered.skip(unread + (-info.size % BLOCK if info.type not in _NO_DATA else 0))


# Members whose size field does not count data blocks that follow.
_NO_DATA = {tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE}

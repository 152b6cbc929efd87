"""The repository's objects as files of a directory on an SFTP server (OpenSSH's sftp-server).

`sftp://user@host[:port]/path`: `path` is the repository directory on the server, which must
exist. The login is by key file only (a password in the URL is refused), and the host key must
be in `known_hosts`: an unknown or changed one is `HostKeyRejected`, never accepted.

How each promise of the port is kept (see `backend.py`):
- `put_if_absent`: the content goes to an exclusive temporary file `tmp/.<name>.<random>.tmp`
  (created 0400, written with pipelined requests, fsynced when the server offers
  fsync@openssh.com), then a v3 RENAME to the key. OpenSSH implements that rename of a regular
  file as link()+unlink(), so it fails when the key exists: create-exclusive and atomic with the
  content. (On a file system without hard links OpenSSH falls back to stat+rename, which is
  racy; such a server is not supported.)
- `put`: the same temporary file, then posix-rename@openssh.com, which replaces.
- Directories are created 0700 when a rename finds its parent missing (a concurrent mkdir of
  the same directory is fine).
- Reads go through the server's `lstat` first: only a regular file is read (a planted symlink
  or FIFO is refused, as on the local backend); pack reads reuse a bounded cache of handles.
- `list` walks directories with the server's lstat attributes: symlinks are never followed nor
  listed, and a name that is not a clean key segment (a `/`, `..`, bad UTF-8) is skipped.

Faults: a lost connection is re-made with exponential backoff and jitter, and the operation
retried, for `retry_budget` seconds; after that, `BackendUnavailable`. A `put_if_absent` whose
rename was sent when the connection broke has an unknown outcome: it is settled by looking at
the key (our size, and for small objects our bytes, means it is ours). Permanent: the host key
(`HostKeyRejected`), the login, a missing repository directory or a refused operation
(`BackendDenied`). No message carries key material.
"""

from __future__ import annotations

import asyncio
import os
import random
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import asyncssh

from davit.adapters.repository.backend import Caps, ObjectInfo, ObjectMissing, ObjectTooLarge, Source, check_key, check_prefix
from davit.adapters.repository.backends.sftp_session import Endpoint, Lost, SftpSession
from davit.adapters.repository.fsutil import NotRegularFile
from davit.domain.errors import BackendDenied, BackendUnavailable

T = TypeVar("T")

_CHUNK = 8 << 20  # local file <-> server, per pipelined burst
_MAX_REQUESTS = 64  # SFTP requests in flight per file
_SMALL = 1 << 20  # an unknown create outcome is settled by comparing bytes up to this size
_MAX_DEPTH = 8  # the repository's keys are at most 3 deep; a deeper tree is not davit's
# Read-only from birth (the open handle still writes it): nothing davit does ever writes into an
# object again (a replace is a rename, a delete needs only the directory), and a backup-only
# login (`internal-sftp -P ...,setstat,fsetstat,lsetstat`, not root) cannot reopen one to
# overwrite it, nor chmod it back.
_FILE = asyncssh.SFTPAttrs(permissions=0o400)
_DIR = asyncssh.SFTPAttrs(permissions=0o700)


def parse_url(url: str) -> tuple[str, str, int, str, str]:
    """(user, host, port, path, where) of an `sftp://` URL; `ValueError` naming what is wrong
    (never echoing a password)."""
    parts = urlsplit(url)
    if parts.scheme != "sftp":
        raise ValueError("a repository URL for SFTP starts with sftp://")
    if parts.password is not None:
        raise ValueError("an sftp:// repository URL must not carry a password: davit logs in with identity_file only")
    if not parts.username or not parts.hostname:
        raise ValueError("an sftp:// repository URL needs a user and a host: sftp://user@host[:port]/path")
    if parts.query or parts.fragment:
        raise ValueError("an sftp:// repository URL has no query or fragment")
    port = parts.port or 22  # raises ValueError for a port out of range
    path = unquote(parts.path)
    segments = path.split("/")[1:]
    if not path.startswith("/") or any(s in ("", ".", "..") for s in segments) or "\x00" in path:
        raise ValueError("an sftp:// repository URL needs a clean absolute path: sftp://user@host/srv/backups/repo")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    user = unquote(parts.username)
    return user, parts.hostname, port, path, f"sftp://{user}@{host}:{port}{path}"


_Found = list[ObjectInfo]


@dataclass
class _Create:
    """What one `put_if_absent` call learnt across its attempts."""

    uncertain: bool = False  # a rename was sent and its answer lost
    was_uncertain: bool = False  # ... in an earlier attempt, whose rename may land late
    debris: list[str] = field(default_factory=list)  # temporary files of attempts cut off


class SftpBackend:
    def __init__(
        self,
        url: str,
        *,
        known_hosts: Path,
        identity_file: Path,
        retry_budget: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        user, host, port, root, where = parse_url(url)
        self.where = where
        self.root = root.rstrip("/") or "/"
        self.retry_budget = retry_budget
        self.caps = Caps(conditional_create=True, can_delete=None, local_root=None)
        self._session = SftpSession(Endpoint(user, host, port, self.root, where, known_hosts, identity_file, connect_timeout))

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{check_key(key)}"

    # --- retrying ---------------------------------------------------------------------------

    def _retry(self, operation: str, key: str, attempt: Callable[[], T]) -> T:
        """`attempt()` until it does not lose the connection, within the retry budget."""
        deadline = time.monotonic() + self.retry_budget
        delay = 0.2
        while True:
            try:
                return attempt()
            except Lost as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendUnavailable(
                        self.where, f"{operation} {key}", f"{exc.reason} (retried for {self.retry_budget:g} s)"
                    ) from None
                time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, 10.0)

    def _denied(self, operation: str, key: str, exc: asyncssh.SFTPError) -> BackendDenied:
        # SFTP v3 has no code for a full disk or a quota: they arrive as a plain "Failure"
        return BackendDenied(self.where, f"{operation} {key}", f"the server answered: {exc.reason or type(exc).__name__}")

    # --- writing ----------------------------------------------------------------------------

    def put_if_absent(self, key: str, src: Source) -> bool:
        final = self._path(key)
        state = _Create()
        try:
            return self._retry("put_if_absent", key, lambda: self._create_once(key, final, src, state))
        finally:
            if state.debris:
                self._remove_quietly(state.debris)

    def _create_once(self, key: str, final: str, src: Source, state: _Create) -> bool:
        if state.uncertain:
            state.was_uncertain = True
            ours = self._is_ours(key, src)
            if ours is not None:
                return ours
        tmp = self._upload("put_if_absent", key, src, state)
        state.uncertain = True
        state.debris.append(tmp)  # if the answer is lost, the rename may not have happened

        async def link(sftp: asyncssh.SFTPClient) -> bool:
            try:
                await self._rename_into(sftp, tmp, final, sftp.rename)
                return True
            except asyncssh.SFTPError as exc:
                # v3 says only "Failure" when the name exists: look
                if not await _lexists(sftp, final):
                    raise self._denied("put_if_absent", key, exc) from None
                await _remove_quietly(sftp, tmp)
                return False

        created = self._session.call(link)
        state.uncertain = False
        state.debris.remove(tmp)  # renamed, or removed by link()
        if not created and state.was_uncertain:  # an earlier attempt's rename may have landed late
            return self._is_ours(key, src) is True
        return created

    def put(self, key: str, src: Source) -> None:
        final = self._path(key)
        state = _Create()

        def once() -> None:
            tmp = self._upload("put", key, src, state)
            state.debris.append(tmp)

            async def replace_(sftp: asyncssh.SFTPClient) -> None:
                self._session.forget(final)
                try:
                    await self._rename_into(sftp, tmp, final, sftp.posix_rename)
                except asyncssh.SFTPError as exc:
                    await _remove_quietly(sftp, tmp)
                    raise self._denied("put", key, exc) from None

            self._session.call(replace_)
            state.debris.remove(tmp)

        try:
            self._retry("put", key, once)
        finally:
            if state.debris:
                self._remove_quietly(state.debris)

    def _upload(self, operation: str, key: str, src: Source, state: _Create) -> str:
        """A new fsynced temporary file on the server holding `src`; its path."""
        tmp_dir = f"{self.root.rstrip('/')}/tmp"
        tmp = f"{tmp_dir}/.{key.rsplit('/', 1)[-1]}.{os.urandom(8).hex()}.tmp"

        async def upload(sftp: asyncssh.SFTPClient) -> None:
            try:
                file = await sftp.open(tmp, "xb", _FILE, max_requests=_MAX_REQUESTS)
            except asyncssh.SFTPNoSuchFile:
                self._session.known_dirs.discard(tmp_dir)
                await self._makedirs(sftp, tmp_dir)
                file = await sftp.open(tmp, "xb", _FILE, max_requests=_MAX_REQUESTS)
            try:
                if isinstance(src, Path):
                    await _copy_local_file(src, file)
                elif len(src):
                    await file.write(bytes(src), 0)
                await self._fsync(file)
            finally:
                await file.close()

        state.debris.append(tmp)  # until it is known renamed or removed
        try:
            self._session.call(upload)
        except asyncssh.SFTPError as exc:
            raise self._denied(operation, key, exc) from None
        state.debris.remove(tmp)
        return tmp

    async def _fsync(self, file: asyncssh.SFTPClientFile) -> None:
        if not self._session.fsync:
            return
        try:
            await file.fsync()
        except asyncssh.SFTPOpUnsupported:
            self._session.fsync = False  # the server's own durability is all there is

    async def _rename_into(self, sftp: asyncssh.SFTPClient, tmp: str, final: str, rename: Callable[[str, str], object]) -> None:
        try:
            await rename(tmp, final)  # type: ignore[misc]
        except asyncssh.SFTPNoSuchFile:
            # the parent is missing: never made, or removed by a delete since (see there)
            parent = final.rsplit("/", 1)[0]
            self._session.known_dirs.discard(parent)
            await self._makedirs(sftp, parent)
            await rename(tmp, final)  # type: ignore[misc]

    async def _makedirs(self, sftp: asyncssh.SFTPClient, directory: str) -> None:
        """`directory` (under the root) and its missing parents, 0700; one made meanwhile by
        someone else is fine."""
        if directory in self._session.known_dirs:
            return
        try:
            await sftp.mkdir(directory, _DIR)
        except asyncssh.SFTPNoSuchFile:
            parent = directory.rsplit("/", 1)[0]
            if len(parent) <= len(self.root):
                raise
            await self._makedirs(sftp, parent)
            await self._mkdir_or_exists(sftp, directory)
        except asyncssh.SFTPFailure:
            await _expect_dir(sftp, directory)
        self._session.known_dirs.add(directory)

    async def _mkdir_or_exists(self, sftp: asyncssh.SFTPClient, directory: str) -> None:
        try:
            await sftp.mkdir(directory, _DIR)
        except asyncssh.SFTPFailure:
            await _expect_dir(sftp, directory)

    def _is_ours(self, key: str, src: Source) -> bool | None:
        """Settle a create whose answer was lost: None if `key` is absent, else whether it holds
        `src` (by size, and by bytes for a small object: a large one is a pack under a random
        name, which no one else writes)."""
        info = self._stat_once(key)
        if info is None:
            return None
        size = src.stat().st_size if isinstance(src, Path) else len(src)
        if info.size != size:
            return False
        if size > _SMALL:
            return True
        mine = src.read_bytes() if isinstance(src, Path) else bytes(src)
        return self.get(key) == mine

    def _remove_quietly(self, paths: list[str]) -> None:
        async def remove(sftp: asyncssh.SFTPClient) -> None:
            for path in paths:
                await _remove_quietly(sftp, path)

        try:
            self._session.call(remove)
        except (Lost, BackendDenied):
            pass  # debris under tmp/: retention's grace clean-up removes it

    # --- reading ----------------------------------------------------------------------------

    async def _check_regular(self, sftp: asyncssh.SFTPClient, key: str, path: str) -> int:
        """The size of the regular file at `path`; a symlink or FIFO is not opened: following
        one reads outside the repository, and opening a FIFO stalls the server's sftp process."""
        try:
            attrs = await sftp.lstat(path)
        except asyncssh.SFTPNoSuchFile:
            raise ObjectMissing(self.where, key) from None
        if attrs.permissions is None or not stat.S_ISREG(attrs.permissions):
            raise NotRegularFile(f"{self.where}: {key} is not a regular file")
        return attrs.size or 0

    async def _open_read(self, sftp: asyncssh.SFTPClient, key: str, path: str) -> asyncssh.SFTPClientFile:
        await self._check_regular(sftp, key, path)
        try:
            return await sftp.open(path, "rb", max_requests=_MAX_REQUESTS)
        except asyncssh.SFTPNoSuchFile:
            raise ObjectMissing(self.where, key) from None

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)

        async def read(sftp: asyncssh.SFTPClient) -> bytes:
            size = await self._check_regular(sftp, key, path)
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(self.where, key, size, max_bytes)
            async with await self._open_read(sftp, key, path) as file:
                data: bytes = await file.read(-1 if max_bytes is None else max_bytes + 1, 0)
            if max_bytes is not None and len(data) > max_bytes:  # grew since the lstat
                raise ObjectTooLarge(self.where, key, len(data), max_bytes)
            return data

        return self._retry("get", key, lambda: self._reading("get", key, read))

    def _reading(self, operation: str, key: str, job: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        """`job` on the connection; what the server refuses is `BackendDenied`."""
        try:
            return self._session.call(job)
        except asyncssh.SFTPError as exc:
            raise self._denied(operation, key, exc) from None

    def get_to(self, key: str, dst: Path) -> None:
        path = self._path(key)

        async def fetch(sftp: asyncssh.SFTPClient) -> None:
            tmp = dst.with_name(f".{dst.name}.{os.urandom(4).hex()}.tmp")
            try:
                async with await self._open_read(sftp, key, path) as file:
                    await _copy_to_local_file(file, tmp)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)

        self._retry("get_to", key, lambda: self._reading("get_to", key, fetch))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.get_ranges(key, [(offset, length)])[0]

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        path = self._path(key)
        session = self._session

        async def read(sftp: asyncssh.SFTPClient) -> list[bytes]:
            handle = await session.acquire(path, lambda: self._open_read(sftp, key, path))
            try:
                reads = [_read_at(handle.file, offset, length) for offset, length in ranges]
                return [*await asyncio.gather(*reads)]
            finally:
                await session.release(handle)

        return self._retry("get_range", key, lambda: self._reading("get_range", key, read))

    # --- listing ----------------------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        base = self._path(prefix[:-1]) if prefix else self.root

        async def walk(sftp: asyncssh.SFTPClient) -> _Found:
            found: _Found = []
            if await self._real_dirs(sftp, prefix):
                await self._walk(sftp, base.encode(), prefix, 0, found)
            return found

        yield from self._retry("list", prefix or "/", lambda: self._reading("list", prefix or "/", walk))

    async def _real_dirs(self, sftp: asyncssh.SFTPClient, prefix: str) -> bool:
        """Whether every directory of `prefix` is one (no symlink to elsewhere on the way)."""
        parts = prefix.split("/")[:-1]
        paths = [self._path("/".join(parts[: i + 1])) for i in range(len(parts))]
        try:
            modes = await asyncio.gather(*(sftp.lstat(p) for p in paths))
        except asyncssh.SFTPNoSuchFile:
            return False
        return all(a.permissions is not None and stat.S_ISDIR(a.permissions) for a in modes)

    async def _walk(self, sftp: asyncssh.SFTPClient, directory: bytes, prefix: str, depth: int, found: _Found) -> None:
        try:
            entries = [e async for e in sftp.scandir(directory)]
        except asyncssh.SFTPNoSuchFile:
            return  # no such prefix (or it vanished while walking)
        subdirs = []
        for entry in entries:
            name = _clean_name(entry.filename)
            mode = entry.attrs.permissions
            if name is None or mode is None:
                continue
            if stat.S_ISDIR(mode) and depth < _MAX_DEPTH:
                subdirs.append((directory + b"/" + name.encode(), f"{prefix}{name}/"))
            elif stat.S_ISREG(mode):
                found.append(ObjectInfo(f"{prefix}{name}", entry.attrs.size or 0, float(entry.attrs.mtime or 0)))
        await asyncio.gather(*(self._walk(sftp, d, p, depth + 1, found) for d, p in subdirs))

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        return self._retry("stat", key, lambda: self._stat_once(key))

    def _stat_once(self, key: str) -> ObjectInfo | None:
        path = self._path(key)

        async def lstat(sftp: asyncssh.SFTPClient) -> ObjectInfo | None:
            try:
                attrs = await sftp.lstat(path)
            except asyncssh.SFTPNoSuchFile:
                return None
            if attrs.permissions is None or not stat.S_ISREG(attrs.permissions):
                return None
            return ObjectInfo(key, attrs.size or 0, float(attrs.mtime or 0))

        return self._reading("stat", key, lstat)

    # --- removing ---------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)

        async def remove(sftp: asyncssh.SFTPClient) -> None:
            self._session.forget(path)
            try:
                await sftp.remove(path)
            except asyncssh.SFTPNoSuchFile:
                return
            except asyncssh.SFTPPermissionDenied as exc:
                self.caps = replace(self.caps, can_delete=False)
                raise self._denied("delete", key, exc) from None
            self.caps = replace(self.caps, can_delete=True)
            if key.count("/") >= 2:
                await self._remove_dir_if_empty(sftp, path.rsplit("/", 1)[0])

        self._retry("delete", key, lambda: self._reading("delete", key, remove))

    async def _remove_dir_if_empty(self, sftp: asyncssh.SFTPClient, directory: str) -> None:
        """Remove a per-snapshot or per-run directory (`snapshots/<id>/`) once its last object
        is gone: left behind, thousands of empty ones would each cost a listing round trip. A
        writer racing into it finds the parent missing and makes it again (`_rename_into`)."""
        self._session.known_dirs.discard(directory)
        try:
            await sftp.rmdir(directory)
        except asyncssh.SFTPError:
            pass  # not empty (the usual case), or gone already

    def close(self) -> None:
        self._session.close()


def _clean_name(raw: bytes | str) -> str | None:
    """A directory entry's name if it can be one segment of a key; a hostile server's `..`,
    a name with `/` or NUL, or bad UTF-8 is left out."""
    try:
        name = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None
    if name in ("", ".", "..") or "/" in name or "\x00" in name or "\\" in name:
        return None
    return name


async def _read_at(file: asyncssh.SFTPClientFile, offset: int, length: int) -> bytes:
    data: bytes = await file.read(length, offset)
    return data


async def _lexists(sftp: asyncssh.SFTPClient, path: str) -> bool:
    try:
        await sftp.lstat(path)
    except asyncssh.SFTPNoSuchFile:
        return False
    return True


async def _expect_dir(sftp: asyncssh.SFTPClient, directory: str) -> None:
    attrs = await sftp.lstat(directory)  # SFTPNoSuchFile if the mkdir failed for another reason
    if attrs.permissions is None or not stat.S_ISDIR(attrs.permissions):
        raise asyncssh.SFTPFailure(f"{directory} is not a directory")


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    try:
        await sftp.remove(path)
    except asyncssh.SFTPError:
        pass


async def _copy_local_file(src: Path, file: asyncssh.SFTPClientFile) -> None:
    """`src` to the open remote `file`: chunks read in a worker thread while the previous one is
    written, each written as pipelined requests."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Task[int] | None = None
    try:
        with open(src, "rb") as fh:
            offset = 0
            while True:
                data = await loop.run_in_executor(None, fh.read, _CHUNK)
                if pending is not None:
                    await pending
                    pending = None
                if not data:
                    return
                pending = asyncio.ensure_future(file.write(data, offset))
                offset += len(data)
    finally:
        if pending is not None:  # the local read failed: the write's outcome no longer matters
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


async def _copy_to_local_file(file: asyncssh.SFTPClientFile, dst: Path) -> None:
    """The open remote `file` into a new local file `dst` (0600): the next chunk is read from
    the server while the previous one is written locally."""
    loop = asyncio.get_running_loop()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out:
        offset = 0
        writing: asyncio.Future[int] | None = None
        try:
            while True:
                data: bytes = await file.read(_CHUNK, offset)
                if writing is not None:
                    await writing
                    writing = None
                if not data:
                    return
                writing = loop.run_in_executor(None, out.write, data)
                offset += len(data)
        finally:
            if writing is not None:  # the file is closed only after its last write ends
                await asyncio.gather(writing, return_exceptions=True)

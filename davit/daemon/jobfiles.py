"""Reading one job file into a verdict: a spec, or the problems that make it unusable.

The registry (davitd) and `davit validate` both go through `load_job_file`, so the daemon and
the CLI give the same verdict on the same file. Reading is where a hostile file is met first:
whatever goes wrong becomes problems naming the field and reason, never an exception.

What is read, and how (a job file is an order to davitd, which runs as root):
- the jobs directory and the file must not be writable by group or others, and must be owned
  by root or by davitd's own user (sshd's StrictModes): otherwise anyone who can write them
  could order a restore over /etc;
- a symlink is followed only to a file inside the jobs directory; the target is reached from
  the directory's descriptor one component at a time with O_NOFOLLOW, so nothing swapped in
  between the check and the open leads outside;
- only a regular file is opened (its type is checked before the open, which could block on a
  FIFO or act on a device, and again on the descriptor, opened O_NONBLOCK);
- a file whose name is not UTF-8 or holds control characters is refused unread: its name goes
  into events and log lines (a lone surrogate could not be recorded at all, a newline forged a
  line), so the verdict shows it escaped (`LoadedJobFile.file`);
- a file over `MAX_JOB_FILE_BYTES` is refused unread; bad UTF-8 and bad TOML are problems;
  nesting and recursion are bounded by `domain.jobs.parse_job`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from davit.daemon.kinds import KINDS
from davit.domain.errors import FieldProblem, InvalidJob
from davit.domain.jobs import AnyJob, parse_job
from davit.eventstore.boundedread import TooLarge, file_kind, read_bounded

MAX_JOB_FILE_BYTES = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OUTSIDE = "outside the jobs directory; davitd follows a symlink only to a file inside it"
_MAX_SYMLINK_HOPS = 8  # the target of a link may be a link (inside the directory) in turn
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

log = logging.getLogger("davitd.jobs")


@dataclass(frozen=True)
class LoadedJobFile:
    """A job file's verdict.

    `content_sha256` is the hash of the bytes read, empty when the file was refused unread.
    `fingerprint` identifies the verdict's input, so a rejection is recorded once, not on every
    sync: the content hash when the file was read, else a hash of the metadata it was refused
    for (its type, mode, owner, size and identity), prefixed `unread:`.
    """

    file: str
    content_sha256: str = ""
    spec: AnyJob | None = None
    problems: list[FieldProblem] = field(default_factory=list)
    fingerprint: str = ""


class _Refused(Exception):
    """A file refused before its content was parsed; `st` is what it was refused on, if known."""

    def __init__(self, reason: str, st: os.stat_result | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.st = st


def load_job_file(path: Path, jobs_dir: Path) -> LoadedJobFile:
    """The verdict on `path`, a file directly inside `jobs_dir` (both as davitd names them)."""
    file = printable_path(str(path))
    if file != str(path):
        problem = FieldProblem("(file)", "the file name is not UTF-8 or has control characters (shown escaped); rename it")
        fingerprint = "unread:" + hashlib.sha256(os.fsencode(path)).hexdigest()
        return LoadedJobFile(file, problems=[problem], fingerprint=fingerprint)
    try:
        data = _read(path, jobs_dir)
    except _Refused as refused:
        problems = [FieldProblem("(file)", refused.reason)]
        return LoadedJobFile(file, problems=problems, fingerprint=_unread_fingerprint(refused))
    content_hash = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        problem = FieldProblem("(file)", f"not UTF-8: {exc.reason} at byte {exc.start}")
        return LoadedJobFile(file, content_hash, problems=[problem], fingerprint=content_hash)
    try:
        spec = parse_job(text, file)
        if spec.kind not in KINDS:
            # a spec without its line in the table of kinds: refused here, not when its first run starts
            problem = FieldProblem("kind", f"{spec.kind} has no adapter in this davit (davit/daemon/kinds.py)")
            return LoadedJobFile(file, content_hash, problems=[problem], fingerprint=content_hash)
        return LoadedJobFile(file, content_hash, spec=spec, fingerprint=content_hash)
    except InvalidJob as exc:
        return LoadedJobFile(file, content_hash, problems=exc.problems, fingerprint=content_hash)
    except Exception as exc:
        # A shape no check foresaw must still be one file's verdict, not the daemon's end; the
        # type only, since the message may quote the file's content.
        log.exception("job file %s: unexpected %s while checking it", file, type(exc).__name__)
        problem = FieldProblem("(file)", f"could not be checked ({type(exc).__name__}); see davitd's log")
        return LoadedJobFile(file, content_hash, problems=[problem], fingerprint=content_hash)


def printable_path(path: str) -> str:
    """`path` as it may be recorded and logged: bytes that are not UTF-8 (surrogate-escaped by
    os.fsdecode) and control characters written as backslash escapes."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _read(path: Path, jobs_dir: Path) -> bytes:
    if path.parent != jobs_dir:
        raise _Refused(f"not directly inside the jobs directory {jobs_dir}")
    try:
        dir_fd = os.open(jobs_dir, _DIR_FLAGS)
    except OSError as exc:
        raise _Refused(f"cannot open the jobs directory {jobs_dir}: {exc.strerror or exc}") from exc
    try:
        dir_st = os.fstat(dir_fd)
        if (why := _unsafe(dir_st)) is not None:
            raise _Refused(f"the jobs directory {jobs_dir} is {why}", dir_st)
        # the names an absolute symlink may use for the jobs directory
        roots = {os.path.abspath(jobs_dir), os.path.realpath(jobs_dir)}
        return _read_in(dir_fd, path.name, roots)
    finally:
        os.close(dir_fd)


def _read_in(dir_fd: int, name: str, roots: set[str]) -> bytes:
    """Read `name`, an entry of the jobs directory open as `dir_fd`."""
    st = _lstat(dir_fd, name)
    if stat.S_ISLNK(st.st_mode):
        parent_fd, name, st = _follow_inside(dir_fd, name, roots)
    else:
        parent_fd = os.dup(dir_fd)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"not a regular file ({file_kind(st.st_mode)}); davitd reads only regular files", st)
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            raise _Refused(f"cannot open: {exc.strerror or exc}", st) from exc
    finally:
        os.close(parent_fd)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
            raise _Refused("changed while it was being opened; it is read again when it changes", fst)
        if (why := _unsafe(fst)) is not None:
            raise _Refused(why, fst)
        return read_bounded(fd, MAX_JOB_FILE_BYTES, "a job file")
    except TooLarge as exc:
        raise _Refused(str(exc), fst) from None
    except OSError as exc:
        raise _Refused(f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _follow_inside(dir_fd: int, name: str, roots: set[str]) -> tuple[int, str, os.stat_result]:
    """Resolve the symlink `name` within the directory `dir_fd`: (descriptor of the directory
    holding the final file, its name there, its lstat). Each component is opened relative to
    the previous one with O_NOFOLLOW, so the walk never leaves the directory, whatever changes
    meanwhile. `..` above the jobs directory and an absolute target not under one of `roots`
    (the jobs directory's names) lead outside and are refused, as are directories on the way
    that are not as safe as the jobs directory itself."""
    parts: list[str] = [name]
    stack = [os.dup(dir_fd)]  # stack[-1] is the current directory; stack[0] the jobs directory
    hops = 0
    try:
        while True:
            if not parts:  # the walk ended on a directory: the target was `.`, `sub/..`, the jobs directory
                st = os.fstat(stack[-1])
                raise _Refused(f"not a regular file ({file_kind(st.st_mode)}); davitd reads only regular files", st)
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) == 1:
                    raise _Refused(f"a symlink leading through '..' {_OUTSIDE}")
                os.close(stack.pop())
                continue
            st = _lstat(stack[-1], part)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise _Refused(f"more than {_MAX_SYMLINK_HOPS} symlinks to follow", st)
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    inside = next((target[len(root) :] for root in roots if _is_under(target, root)), None)
                    if inside is None:
                        raise _Refused(f"a symlink to {target}, {_OUTSIDE}", st)
                    while len(stack) > 1:  # an absolute target is walked from the jobs directory
                        os.close(stack.pop())
                    target = inside.lstrip("/")
                parts[:0] = target.split("/")
                continue
            if not parts:  # the final component: the file itself
                fd = stack.pop()
                return fd, part, st
            if not stat.S_ISDIR(st.st_mode):
                raise _Refused(f"a symlink through {part!r}, which is not a directory", st)
            sub = _open_dir(stack[-1], part)
            stack.append(sub)
            sub_st = os.fstat(sub)
            if (why := _unsafe(sub_st)) is not None:
                raise _Refused(f"a symlink into the directory {part!r}, which is {why}", sub_st)
    except OSError as exc:
        raise _Refused(f"cannot follow the symlink: {exc.strerror or exc}") from exc
    finally:
        for fd in stack:
            os.close(fd)


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _open_dir(dir_fd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)


def _lstat(dir_fd: int, name: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise _Refused(f"cannot read: {exc.strerror or exc}") from exc


def _unsafe(st: os.stat_result) -> str | None:
    """Why davitd must not take orders from this file or directory (None: it may)."""
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = (
            "group and others"
            if st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IWOTH
            else ("group" if st.st_mode & stat.S_IWGRP else "others")
        )
        return f"writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); davitd refuses what others could change: chmod go-w"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not by root or davitd's user (uid {os.geteuid()})"
    return None


def _unread_fingerprint(refused: _Refused) -> str:
    st = refused.st
    identity = "" if st is None else f"{st.st_dev}:{st.st_ino}:{st.st_mode}:{st.st_uid}:{st.st_size}:{st.st_mtime_ns}"
    return "unread:" + hashlib.sha256(f"{identity}\0{refused.reason}".encode()).hexdigest()

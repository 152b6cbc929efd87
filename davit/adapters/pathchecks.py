"""The local-path checks of `davit check` that several kinds share (a files backup's source, a
restore's target, a text export's output file, an import's input file, a local repository's
free space): read with `lstat`, `access`, `scandir` and `statvfs`, never opened for writing,
so nothing is created or changed.

Apart from the kinds' check modules so that the CLI and `daemon/preflight.py` import it
without importing any kind's module (tests/unit/test_kinds.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from davit.domain.checks import Check, Checklist

LOW_FREE_BYTES = 1 << 30  # under this much free and no size known: a warning


def user() -> str:
    return f"uid {os.geteuid()}"


def readable_directory(cl: Checklist, subject: str, path: Path) -> bool:
    """Record whether `path` is a directory this user can list; whether it is."""
    with cl.check(subject, "readable") as c:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            c.fail(f"{path} is a symbolic link (never followed)")
        elif not stat.S_ISDIR(st.st_mode):
            c.fail(f"{path} is not a directory")
        elif not os.access(path, os.R_OK | os.X_OK):
            c.fail(f"{user()} may not list {path}")
        else:
            with os.scandir(path) as entries:
                next(entries, None)
            c.ok(f"{path} (listed by {user()})")
    return c.passed


def readable_file(cl: Checklist, subject: str, path: Path) -> None:
    with cl.check(subject, "readable") as c:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            c.fail(f"{path} is not a regular file")
        elif not os.access(path, os.R_OK):
            c.fail(f"{user()} may not read {path}")
        else:
            c.ok(f"{path}, {st.st_size} bytes")


def nearest_existing(path: Path) -> Path:
    here = path
    while not os.path.lexists(here) and here.parent != here:
        here = here.parent
    return here


def writable_place(cl: Checklist, subject: str, path: Path, overwrite: bool, is_dir: bool = True) -> bool:
    """Record whether a run may write `path` (a directory or a file it creates or fills): it is
    absent under a directory this user may write, or (with `overwrite`, or an empty directory)
    there and writable."""
    with cl.check(subject, "writable") as c:
        if os.path.lexists(path):
            _existing_target(c, path, overwrite, is_dir)
        else:
            parent = nearest_existing(path.parent)
            if not parent.is_dir():
                c.fail(f"{parent} is not a directory ({path} cannot be made)")
            elif not os.access(parent, os.W_OK | os.X_OK):
                c.fail(f"{user()} may not create {path}: {parent} is not writable")
            else:
                c.ok(f"{path} does not exist; {user()} may create it under {parent}")
    return c.passed


def _existing_target(c: Check, path: Path, overwrite: bool, is_dir: bool) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        c.fail(f"{path} is a symbolic link (never followed)")
    elif is_dir != stat.S_ISDIR(st.st_mode):
        c.fail(f"{path} is not a {'directory' if is_dir else 'regular file'}")
    elif not os.access(path, os.W_OK | (os.X_OK if is_dir else 0)):
        c.fail(f"{user()} may not write {path}")
    elif is_dir and not overwrite and any(os.scandir(path)):
        c.fail(f"{path} is not empty and overwrite is false")
    else:
        c.ok(f"{path} exists and {user()} may write it")


def free_space(cl: Checklist, subject: str, path: Path, need: int | None) -> None:
    """Record the free space where `path` lands, against `need` bytes when known."""
    with cl.check(subject, "free space") as c:
        where = nearest_existing(path)
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
        text = f"{free / (1 << 30):.1f} GiB free at {where}"
        if need is not None and free < need:
            c.fail(f"{text}, the snapshot holds {need / (1 << 30):.1f} GiB")
        elif need is None and free < LOW_FREE_BYTES:
            c.warn(f"{text} (under 1 GiB)")
        else:
            c.ok(text + (f" for {need / (1 << 30):.1f} GiB" if need is not None else ""))

"""The tree of a `compose.backup` snapshot (manifest kind `compose`): where a stack's parts lie
in it, and the walk that produces its entries, in walk order, for the files machinery.

Every line is a files-format entry (`repository/treeformat.py`: chunks in `c`, mode, owner,
times, links), so `verify`, `snapshots`, retention, prune and copies treat the snapshot like a
files or volumes one. The tree's top-level directories:

    binds/<n>            bind source n's content: a directory (walked like a files source), or
                         one regular file; n = 0, 1, ... indexes the manifest's `source.binds`
    definition/<rel>     each file of the project's definition, as `compose.migrate` collects
                         it (`compose/definition.py`: compose files, `.env`, `env_file:`,
                         `extends:`/`include:`, `configs:`/`secrets:`/`label_file:` files),
                         named relative to the project directory (a compose file outside it by
                         its file name), with the directories between; `definition` itself
                         carries the project directory's mode and owner
    images/<id>.tar      with `images = true`: each image the project's containers run, as the
                         engine exports it (`docker save`'s format; `compose/stackimages.py`)
    volumes/<key>/       each named volume's content, by its key in the compose file (its
                         engine name carries the project's name, which a restore may change)

The manifest's `source` says what each part was (see `ComposeBackupWork._snapshot_source`):
`project`, `working_dir`, `config_files` (absolute, as the containers' labels name them),
`compose_files` (relative, in `-f` order), `services`, `definition` (`files`: the relative names
stored; `outside`: files the project references outside its directory, named but not stored),
`volumes` ([{key, name, path}]), `binds` ([{source (absolute), path, type "dir"|"file",
in_project, services}]), `images` ([{id, refs, bytes, path}]; empty without `images = true`)
and `skipped_binds` ([{source, reason}]: a socket, a device, a source
gone). A restore puts the definition into a project directory, each volume into the volume
compose makes for its key, and each bind where its source (translated by `path_map`, or into
the new project directory) says.

Reading is confined as the files walk is: a definition file is reached component by component
from the project directory's descriptor without following a symlink (one reached through a
symlinked directory is left out with a warning; a symlink named as a file is stored as a link,
never followed), and handed over as a `WalkedFile`, opened later only if it is the inode seen.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from davit.adapters.files.backup import Readable
from davit.adapters.files.tree import Skipped, WalkedFile, stat_entry, walk_root
from davit.adapters.repository.treeformat import DIR, FILE, Entry, walk_key
from davit.domain.errors import SourceMissing

BINDS, DEFINITION, IMAGES, VOLUMES = "binds", "definition", "images", "volumes"
DIR_TYPE, FILE_TYPE = "dir", "file"

Walked = tuple[Entry, WalkedFile | Readable | None] | Skipped

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class StackParts:
    """What one stack's snapshot holds, as recorded in the run's details at prepare (so a
    resumed run walks the same parts): read back with `from_details`."""

    working_dir: str
    definition: dict[str, str]  # relative name -> local path
    volumes: list[dict[str, Any]] = field(default_factory=list)  # {key, name, mountpoint, labels, path}
    binds: list[dict[str, Any]] = field(default_factory=list)  # {source, path, type, in_project, services}
    images: list[dict[str, Any]] = field(default_factory=list)  # {id, refs, bytes, path}

    @staticmethod
    def from_details(details: dict[str, Any]) -> StackParts:
        return StackParts(
            details["working_dir"],
            dict(details["definition"]["files"]),
            list(details["volumes"]),
            list(details["binds"]),
            list(details.get("images") or []),
        )


def stack_walk(parts: StackParts, export: Callable[[str], Readable] | None = None) -> Iterator[Walked]:
    """Every entry of the stack's tree, in walk order (`walk_key`), as the store step wants them;
    each image's content is `export(image_id)`, open until the next entry is taken (without
    `export`, as a scan for the total wants it: the image's entry alone, sized as inspected)."""
    yield Entry(path=".", type=DIR, mode=0o755, mtime_ns=0), None
    if parts.binds:
        yield Entry(path=BINDS, type=DIR, mode=0o755, mtime_ns=0), None
        for bind in sorted(parts.binds, key=lambda b: walk_key(b["path"])):
            yield from _bind_walk(bind)
    yield from definition_walk(parts.working_dir, parts.definition)
    if parts.images:
        yield Entry(path=IMAGES, type=DIR, mode=0o755, mtime_ns=0), None
        for image in sorted(parts.images, key=lambda i: walk_key(i["path"])):
            entry = Entry(path=image["path"], type=FILE, mode=0o644, mtime_ns=0, size=int(image["bytes"]))
            if export is None:
                yield entry, None
                continue
            stream = export(image["id"])
            try:
                yield entry, stream
            finally:
                stream_close = getattr(stream, "close", None)
                if stream_close is not None:
                    stream_close()
    if parts.volumes:
        yield Entry(path=VOLUMES, type=DIR, mode=0o755, mtime_ns=0), None
        for volume in sorted(parts.volumes, key=lambda v: walk_key(v["path"])):
            root = Path(volume["mountpoint"])
            if not root.is_dir():
                raise SourceMissing(f"volume {volume['name']}", f"its mountpoint {root} is not readable from here")
            yield from walk_root(root, volume["path"], [])


def _bind_walk(bind: dict[str, Any]) -> Iterator[Walked]:
    source, rel = bind["source"], bind["path"]
    if bind["type"] == DIR_TYPE:
        if not os.path.isdir(source):
            yield Skipped(rel, f"bind source {source} is no longer a directory; not stored")
            return
        yield from walk_root(Path(source), rel, [])  # a symlinked source is followed, as the engine does
        return
    real = os.path.realpath(source)  # the engine mounts what a symlinked source leads to
    try:
        st = os.lstat(real)
    except OSError as exc:
        yield Skipped(rel, f"bind source {source}: {exc.strerror}; not stored")
        return
    if not stat.S_ISREG(st.st_mode):
        yield Skipped(rel, f"bind source {source} is no longer a regular file; not stored")
        return
    yield stat_entry(rel, st), WalkedFile(real, st.st_dev, st.st_ino)


def definition_walk(working_dir: str, files: dict[str, str]) -> Iterator[Walked]:
    """`definition` (the project directory's own entry), then each definition file and the
    directories leading to it, in walk order."""
    try:
        root = os.open(working_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # a symlinked root is followed
    except OSError as exc:
        raise SourceMissing(working_dir, f"cannot open the project directory: {exc.strerror}") from exc
    try:
        yield stat_entry(DEFINITION, os.fstat(root)), None
        names = set(files)
        for rel in files:
            parts = rel.split("/")
            names.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for rel in sorted(names, key=walk_key):
            local = files.get(rel)
            if local is None:
                yield from _definition_dir(root, rel)
            else:
                yield from _definition_file(root, working_dir, rel, local)
    finally:
        os.close(root)


def _open_below(root: int, parts: list[str]) -> int:
    """A descriptor of the directory `parts` below `root`, each component opened without
    following a symlink (OSError ELOOP/ENOTDIR if one is a symlink or not a directory)."""
    fd = os.dup(root)
    try:
        for name in parts:
            if name in ("", ".", ".."):
                raise OSError(errno.EINVAL, "not a plain name")
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _not_reached(rel: str, exc: OSError) -> Skipped:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return Skipped(f"{DEFINITION}/{rel}", "reached through a symlink or a file in its path; not followed, not stored")
    return Skipped(f"{DEFINITION}/{rel}", f"cannot be reached: {exc.strerror}; not stored")


def _definition_dir(root: int, rel: str) -> Iterator[Walked]:
    try:
        fd = _open_below(root, rel.split("/"))
    except OSError as exc:
        yield _not_reached(rel, exc)
        return
    try:
        yield stat_entry(f"{DEFINITION}/{rel}", os.fstat(fd)), None
    finally:
        os.close(fd)


def _definition_file(root: int, working_dir: str, rel: str, local: str) -> Iterator[Walked]:
    """One definition file. Inside the project directory it is reached from `root`; a compose
    file outside it (stored by its name) from its own directory, opened as compose opened it."""
    inside = os.path.normpath(local) == os.path.normpath(os.path.join(working_dir, rel))
    parent_parts, name = rel.split("/")[:-1], rel.split("/")[-1]
    try:
        parent = _open_below(root, parent_parts) if inside else os.open(os.path.dirname(local), os.O_RDONLY | os.O_CLOEXEC)
        name = name if inside else os.path.basename(local)
    except OSError as exc:
        yield _not_reached(rel, exc)
        return
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
    except OSError as exc:
        yield Skipped(f"{DEFINITION}/{rel}", f"cannot stat: {exc.strerror}; not stored")
        return
    finally:
        os.close(parent)
    path = f"{DEFINITION}/{rel}"
    if stat.S_ISREG(st.st_mode):
        yield stat_entry(path, st), WalkedFile(local, st.st_dev, st.st_ino)
    elif stat.S_ISLNK(st.st_mode):
        yield stat_entry(path, st, target), None  # stored as the link it is, never followed
    else:  # a directory, socket, device or FIFO named as a file: nothing compose reads as one
        yield Skipped(path, "not a regular file or a symlink; not stored")

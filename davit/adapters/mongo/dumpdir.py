"""mongodump's directory format, read and written without decoding a document.

`DIR/DB/COLL.bson` is the collection's documents as concatenated BSON; `DIR/DB/COLL.metadata.json`
its options, indexes, uuid, collectionName and type in canonical Extended JSON; with gzip both
names end in `.gz`. A view has only its `.metadata.json` (`type: view`, `viewOn` and `pipeline`
in its options). Collection names are escaped in file names as mongodump does (Go's
`url.PathEscape`, mongo-tools' `util.EscapeCollectionName`: `/`, `%`, `?`, `;`, `,`, spaces,
control and non-ASCII bytes become `%XX`); an escaped name longer than 238 bytes, which with
`.metadata.json.gz` would pass the 255-byte file name limit, is cut to its first 208 bytes
followed by `%24` and the unpadded URL-safe base64 of the SHA-1 of the real name (mongodump's
`outputPath`). Reading takes the name from `collectionName` in the metadata, else unescapes the
file name; a cut name without that metadata cannot be read back, as with mongorestore.
`system.*` collections are skipped, except `system.js`,
as mongorestore does. Reading cuts the `.bson` stream into chunks of whole documents (the same
cut every time, so "chunks done" is a cursor); writing copies chunks in order, to a temporary
name renamed into place, so a half-written export never looks complete.
"""

from __future__ import annotations

import base64
import errno
import gzip
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast
from urllib.parse import quote, unquote

from davit.adapters.mongo.layout import meta_from_text, meta_to_text
from davit.adapters.mongo.rawbson import chunks_of, read_docs
from davit.domain.errors import SourceMissing, UnsafeName
from davit.domain.names import unsafe_reason

BSON, META = ".bson", ".metadata.json"
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PATH_SEGMENT_SAFE = "$&+:=@"  # what Go's url.PathEscape leaves as is besides letters, digits and -_.~


def escape_collection_name(name: str) -> str:
    """A collection name as mongodump writes it in a file name (mongo-tools' EscapeCollectionName)."""
    return quote(name, safe=PATH_SEGMENT_SAFE)


def unescape_collection_name(name: str) -> str:
    return unquote(name)


# mongodump keeps every file name within 255 bytes, its longest suffix being `.metadata.json.gz`
LONGEST_STEM = 238
KEPT_OF_LONG_NAME = 208  # + "%24" + 27 characters of hash = 238
HASH_MARK = "%24"


def dump_file_stem(name: str) -> str:
    """A collection's file name without suffix as mongodump writes it: escaped, and cut with a hash if too long."""
    escaped = escape_collection_name(name)
    if len(escaped) <= LONGEST_STEM:
        return escaped
    digest = base64.urlsafe_b64encode(hashlib.sha1(name.encode()).digest()).rstrip(b"=").decode()
    return escaped[:KEPT_OF_LONG_NAME] + HASH_MARK + digest


def is_cut_stem(stem: str) -> bool:
    """Whether mongodump cut this file name (mongorestore's test): only the metadata has the real name."""
    return len(stem) == LONGEST_STEM and HASH_MARK in stem


@dataclass(frozen=True)
class DumpCollection:
    ns: str
    bson: Path | None  # None: a view
    meta: Path | None

    def meta_text(self) -> str:
        """The metadata.json text, or an empty collection's if the dump has none."""
        if self.meta is None:
            coll = self.ns.split(".", 1)[1]
            return meta_to_text({"options": {}, "indexes": [], "collectionName": coll, "type": "collection"})
        with _open_read(self.meta) as fh:
            return fh.read().decode()

    def chunks(self, limit: int) -> Iterator[tuple[bytes, int, bytes]]:
        """(chunk, documents, last document) in file order."""
        if self.bson is None:
            return
        with _open_read(self.bson) as fh:
            yield from chunks_of(read_docs(fh), limit)


def _open_read(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb", buffering=1 << 20)


def list_dump(root: Path) -> list[DumpCollection]:
    """The collections and views of a mongodump directory, sorted by namespace; system collections skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    found = []
    for db_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {p.name: p for p in db_dir.iterdir()}
        stems: dict[str, tuple[Path | None, Path | None]] = {}
        for name, path in files.items():
            base = name[:-3] if name.endswith(".gz") else name
            if base.endswith(META):
                stem = base[: -len(META)]
                bson, meta = stems.get(stem, (None, None))
                if meta is None or not name.endswith(".gz"):  # a plain file wins over its .gz twin
                    stems[stem] = (bson, path)
            elif base.endswith(BSON):
                stem = base[: -len(BSON)]
                bson, meta = stems.get(stem, (None, None))
                if bson is None or not name.endswith(".gz"):
                    stems[stem] = (path, meta)
        for stem, (bson, meta) in stems.items():
            coll = _collection_name(db_dir, stem, meta)
            if coll.startswith("system.") and coll != "system.js":
                continue
            if bson is None and (meta is None or _meta_type(meta) != "view"):
                continue  # metadata without data: only a view is something to restore
            found.append(DumpCollection(f"{db_dir.name}.{coll}", bson, meta))
    return sorted(found, key=lambda c: c.ns)


def _read_meta(path: Path) -> dict[str, object]:
    with _open_read(path) as fh:
        return meta_from_text(fh.read().decode())


def _collection_name(db_dir: Path, stem: str, meta: Path | None) -> str:
    if meta is not None:
        try:
            name = _read_meta(meta).get("collectionName")
        except (OSError, ValueError, EOFError):
            name = None
        if isinstance(name, str) and name:
            return name
    if is_cut_stem(stem):
        raise SourceMissing(
            str(db_dir / stem),
            "mongodump cut this collection's file name to fit and only its "
            "metadata.json (`collectionName`) holds the full name, which is "
            "missing or unreadable",
        )
    return unescape_collection_name(stem)


def _meta_type(meta: Path) -> str:
    try:
        return str(_read_meta(meta).get("type", "collection"))
    except (OSError, ValueError, EOFError):
        return "collection"


def namespace_problem(ns: str) -> str | None:
    """Why the namespace `ns` of a snapshot cannot be written under a dump directory, or None.

    The database name becomes a directory, so it must be one safe path component (not empty,
    `.`, `..`, nor holding `/` or NUL; MongoDB allows none of these in a database name). The
    collection name is escaped into a file name as mongodump does (`/` becomes `%2F`), so a
    legitimate name with `/` still works; an empty one, `.`, `..` or one with NUL is refused
    (MongoDB allows none of them), and the escaped file name is checked too.
    """
    db, sep, coll = ns.partition(".")
    if not sep:
        return "it is not of the form DB.COLLECTION"
    reason = unsafe_reason(db)
    if reason is not None:
        return f"database name {db!r}: {reason}"
    if coll in ("", ".", "..") or "\0" in coll:
        return f"collection name {coll!r}: " + (unsafe_reason(coll) or "it holds a NUL byte")
    reason = unsafe_reason(dump_file_stem(coll) + META + ".gz")
    if reason is not None:
        return f"collection name {coll!r} as a file name: {reason}"
    return None


def write_collection(root: Path, ns: str, meta_text: str, chunks: Iterable[bytes], compress: bool) -> int:
    """Write one collection's `.bson` and `.metadata.json` (gzip-compressed if asked); bytes written.
    A namespace that would put a file outside `root` raises `UnsafeName` before anything is written."""
    problem = namespace_problem(ns)
    if problem is not None:
        raise UnsafeName("(export)", ns, problem)
    db, coll = ns.split(".", 1)
    folder_fd = _open_db_folder(root, db, ns)
    suffix = ".gz" if compress else ""
    total = 0
    stem = dump_file_stem(coll)
    files: list[tuple[str, Iterable[bytes]]] = [(stem + META + suffix, [meta_text.encode()])]
    if meta_from_text(meta_text).get("type", "collection") != "view":  # mongodump writes no .bson for a view
        files.insert(0, (stem + BSON + suffix, chunks))
    try:
        for name, parts in files:
            # Not named after the file (a cut name is already as long as a file name may be), and
            # not predictable: created new (O_EXCL, O_NOFOLLOW) relative to the folder's descriptor,
            # so nothing planted in DIR (a symlink at a guessed name) is ever written through.
            tmp = f".{hashlib.sha1(name.encode()).hexdigest()[:16]}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, NEW_FILE, 0o666, dir_fd=folder_fd)
            with open(fd, "wb") as raw:
                out = cast(IO[bytes], gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else raw)
                for part in parts:
                    out.write(part)
                    total += len(part)
                if compress:
                    out.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return total


def _open_db_folder(root: Path, db: str, ns: str) -> int:
    """A descriptor of `root/db`, made if missing, opened without following a symlink there:
    one planted in the dump directory (or swapped in later) is refused, never written through."""
    root.mkdir(parents=True, exist_ok=True)  # the operator's DIR: resolved as given
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(db, dir_fd=root_fd)
        except FileExistsError:
            pass
        try:
            return os.open(db, DIRECTORY, dir_fd=root_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeName("(export)", ns, f"{root / db} is a symbolic link or not a directory") from None
            raise
    finally:
        os.close(root_fd)

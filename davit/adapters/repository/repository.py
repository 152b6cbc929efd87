"""The repository on a local directory: chunk store, snapshot manifests, staging, locks.

Layout:
    config.json                 format version and chunking parameters
    packs/<xx>/<pack>.pack      compressed chunks, see `packs.py`
    index/<pack>.idx            what each pack holds
    snapshots/<id>/manifest.json  a snapshot exists once its manifest is durable (`manifests.py`:
                                  one that cannot be used is listed as damaged, nothing else)
    snapshots/<id>/tree.jsonl.zst the tree the manifest describes
    staging/<run>/              a backup run's partial tree while it is in progress (`staging.py`)
    tmp/                        temporary names of files not yet renamed into place
    locks/<id>.<gen>.json       shared by writers, exclusive for pruning (see `locks.py`)

Every tree, published or staged, is JSON lines whose `c` key lists the chunk ids a line
references (the tree format, `treeformat.py`); pruning and `davit verify`
read only that key, so an adapter with a tree of its own keeps `c` and stages it as
`staging/<dir>/tree.jsonl`, or its chunks would look unreferenced.

Everything is created 0700 (directories) / 0600 (files) whatever the process's umask: a
repository holds the content of whatever was backed up (`/etc/shadow` included).

A chunk's id is the sha256 of its plain bytes (an HMAC of them in an encrypted repository,
see `crypto.py`). Reading a chunk opens it (decrypts and authenticates, if sealed),
decompresses it and checks its id before handing back a single byte, so a corrupt chunk never
reaches a target.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from davit.adapters.repository.backend import Backend
from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.crypto import RepositoryKey, RepositoryKeyError, SealedBlobError, plain_chunk_id
from davit.adapters.repository.fsutil import make_dirs, write_atomic
from davit.adapters.repository.locks import DirectoryLockBackend, HeldLock, RepositoryLocks
from davit.adapters.repository.manifests import MANIFEST, Loaded, load_manifest
from davit.adapters.repository.packs import (
    CODEC_RAW,
    CODEC_SEALED,
    CODEC_ZSTD,
    BlobRef,
    PackWriter,
    decode_index,
    pack_path,
)
from davit.adapters.repository.staging import Staging, staging_path
from davit.adapters.repository.trees import TreeWriter, check_stored, compressed_stream, plain_lines, write_plain_tree
from davit.domain.errors import CorruptChunk, PermanentError, RepositoryLockLost, SnapshotNotFound, SourceMissing

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    job: str
    kind: str
    created_at: str
    run_id: str
    source: dict[str, Any]
    stats: dict[str, Any]
    path: Path
    # True: its MAC verified under the repository key; None: nothing to verify it with (a plain
    # repository, or an encrypted one opened without its passphrase, for listing)
    authenticated: bool | None = None
    parent: str | None = None
    tree_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "kind": self.kind,
            "created_at": self.created_at,
            "run_id": self.run_id,
            "source": self.source,
            "stats": self.stats,
            "damaged": False,
        }


@dataclass(frozen=True)
class DamagedSnapshot:
    """A snapshot directory whose manifest cannot be used, and why: listed, never used."""

    id: str  # the directory's name
    reason: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "damaged": True, "reason": self.reason}


class Repository:
    def __init__(self, root: Path, compression_level: int = 3, key: RepositoryKey | None = None, encrypted: bool = False) -> None:
        self.root = root
        self.compression_level = compression_level
        self.encrypted = encrypted or key is not None
        self._key = key
        self._index: dict[bytes, BlobRef] = {}
        self._index_lock = threading.Lock()
        self._loaded_idx: set[str] = set()
        self._local = threading.local()
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._fd_lock = threading.Lock()
        self.locks = RepositoryLocks(DirectoryLockBackend(root / "locks", root / "tmp"))
        # the storage port (`backend.py`); the methods below still use `root` until they are routed
        self.backend: Backend = LocalBackend(root)

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, compression_level: int = 3, create: bool = True, passphrase: str | None = None) -> Repository:
        """Open (or create) the repository at `root`.

        With `passphrase`, a new repository is created encrypted and an existing one must be
        encrypted with it. Without, an encrypted repository still opens, for listing snapshots;
        reading or writing its chunks and trees raises `RepositoryKeyError`.
        """
        config = root / "config.json"
        if not config.exists():
            if not create:
                raise PermanentError(f"{root} is not a davit repository (no config.json)")
            make_dirs(root)
            for sub in ("packs", "index", "snapshots", "staging", "tmp"):
                make_dirs(root / sub)
            settings: dict[str, Any] = {"format": FORMAT_VERSION}
            key = None
            if passphrase is not None:
                key, settings["encryption"] = RepositoryKey.create(passphrase)
            write_atomic(config, json.dumps(settings, indent=1).encode(), root / "tmp")
            return cls(root, compression_level, key)
        settings = json.loads(config.read_text())
        found = settings.get("format")
        if found != FORMAT_VERSION:
            raise PermanentError(f"{root}: repository format {found} is not supported")
        for sub in ("packs", "index", "snapshots", "staging", "tmp"):
            make_dirs(root / sub)
        section = settings.get("encryption")
        if section is None and passphrase is not None:
            raise RepositoryKeyError(
                f"{root}: a passphrase is configured but this repository was created without encryption; "
                "remove the passphrase from its configuration or give the repository a new path"
            )
        key = RepositoryKey.open(passphrase, section, str(root)) if section is not None and passphrase else None
        repo = cls(root, compression_level, key, encrypted=section is not None)
        repo.refresh_index()
        return repo

    @staticmethod
    def change_passphrase(root: Path, old: str, new: str) -> None:
        """Seal the repository's key under `new` instead of `old`; the data is not rewritten."""
        config = root / "config.json"
        if not config.exists():
            raise PermanentError(f"{root} is not a davit repository (no config.json)")
        settings = json.loads(config.read_text())
        section = settings.get("encryption")
        if section is None:
            raise RepositoryKeyError(f"{root} is not encrypted: it has no passphrase to change")
        settings["encryption"] = RepositoryKey.rewrap(old, new, section, str(root))
        write_atomic(config, json.dumps(settings, indent=1).encode(), root / "tmp")

    def refresh_index(self) -> None:
        """Bring the loaded index up to the repository as it is now: drop the packs whose index
        is gone (a prune, by this or another process or `Repository`), load the new ones.

        Called on every lock acquisition, so under a lock `has` answers for the repository as
        it is, not as it was when this object first looked.
        """
        present = {idx.stem for idx in (self.root / "index").glob("*.idx")}
        with self._index_lock:
            gone = self._loaded_idx - present
            still = self._loaded_idx & present
            dropped: set[bytes] = set()
            if gone:
                for cid, ref in list(self._index.items()):
                    if ref.pack in gone:
                        del self._index[cid]
                        dropped.add(cid)
                self._loaded_idx -= gone
        for pack in gone:
            self.forget_pack(pack)
        for pack in sorted(present - still):
            self._load_index(pack)
        if dropped:
            # A chunk was also in a pack loaded before (two backups stored it at once): its
            # entry there was skipped at load time, and is the one to answer with now.
            for pack in sorted(still):
                self._load_index(pack, only=dropped)

    def _load_index(self, pack: str, only: set[bytes] | None = None) -> None:
        idx = self.root / "index" / f"{pack}.idx"
        try:
            data = idx.read_bytes()
        except FileNotFoundError:
            return  # pruned since it was listed
        entries = decode_index(pack, data, idx)
        with self._index_lock:
            for cid, ref in entries:
                if only is None or cid in only:
                    self._index.setdefault(cid, ref)
            if only is None:
                self._loaded_idx.add(pack)

    def reload_index(self) -> None:
        """Forget what is loaded and read every index again (after packs were deleted)."""
        with self._index_lock:
            self._index.clear()
            self._loaded_idx.clear()
        self.refresh_index()

    def read_blob(self, ref: BlobRef) -> bytes:
        """A blob exactly as stored (for copying between packs without recompressing)."""
        return self._pread(ref)

    def blob_ref(self, chunk_id: bytes) -> BlobRef | None:
        """Where the chunk is stored (pack, offset, lengths, codec), for `read_blob`; None if the
        repository lacks it (the index is refreshed once before answering so)."""
        ref = self._index.get(chunk_id)
        if ref is None:
            self.refresh_index()
            ref = self._index.get(chunk_id)
        return ref

    def forget_pack(self, pack: str) -> None:
        with self._fd_lock:
            fd = self._fds.pop(pack, None)
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    # --- chunks ------------------------------------------------------------------------------

    def has(self, chunk_id: bytes) -> bool:
        """Whether the loaded index names the chunk. Exact while a lock is held (taking one
        refreshes the index, and no prune runs meanwhile); outside one, see `missing_chunks`."""
        return chunk_id in self._index

    def missing_chunks(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Which of `chunk_ids` the repository lacks as it is now: the index is refreshed first
        (packs pruned by anyone are dropped), and a chunk whose pack file is gone is missing."""
        self.refresh_index()
        missing: set[bytes] = set()
        packs: dict[str, bool] = {}
        for cid in chunk_ids:
            ref = self._index.get(cid)
            if ref is None:
                missing.add(cid)
                continue
            if ref.pack not in packs:
                packs[ref.pack] = pack_path(self.root, ref.pack).is_file()
            if not packs[ref.pack]:
                missing.add(cid)
        return missing

    def encode(self, plain: bytes | memoryview) -> tuple[bytes, bytes | None, int]:
        """Name `plain`; compress (and seal) it only if the repository lacks it. (id, stored, codec)."""
        key = self._key
        if key is None and self.encrypted:
            raise self._key_required()
        cid = key.chunk_id(plain) if key is not None else plain_chunk_id(plain)
        if cid in self._index:
            return cid, None, CODEC_RAW
        stored = self._compressor().compress(plain)
        codec = CODEC_ZSTD
        if len(stored) >= len(plain):
            stored, codec = bytes(plain), CODEC_RAW
        if key is not None:
            return cid, key.seal(stored, cid), codec | CODEC_SEALED
        return cid, stored, codec

    def chunk_id(self, plain: bytes | memoryview) -> bytes:
        """The id `plain` has (or would have) in this repository."""
        if self._key is None and self.encrypted:
            raise self._key_required()
        return self._key.chunk_id(plain) if self._key is not None else plain_chunk_id(plain)

    def _key_required(self) -> RepositoryKeyError:
        return RepositoryKeyError(
            f"{self.root} is encrypted: configure the passphrase of this repository "
            "(passphrase_env or passphrase_file in its [repositories.NAME] section)"
        )

    def new_pack(self) -> PackWriter:
        return PackWriter(self.root, os.urandom(16).hex())

    def seal_pack(self, writer: PackWriter) -> list[bytes]:
        """Make a pack durable and visible; the ids of the chunks it holds.

        Call it under a lock (`locked`), and name its chunks in a staging tree before that lock
        is released: a prune counts a sealed pack's chunks as used only once a tree names them.
        Refused (`RepositoryLockLost`) once a lock held through this object is lost: a prune
        may have taken over, and the pack would dedupe against chunks it deletes.
        """
        self.locks.check_held()
        entries = writer.seal()
        with self._index_lock:
            for cid, ref in entries:
                self._index.setdefault(cid, ref)
            self._loaded_idx.add(writer.pack_id)
        return [cid for cid, _ in entries]

    def read_chunk(self, chunk_id: bytes, ref: BlobRef | None = None) -> bytes:
        """The plain bytes of a chunk, verified against its id before they are returned. With
        `ref`, that stored copy is read rather than the one the index answers with (`repository
        check --read-data` reads every copy, a chunk stored twice included)."""
        if ref is None:
            ref = self._index.get(chunk_id)
        if ref is None:
            self.refresh_index()
            ref = self._index.get(chunk_id)
        if ref is None:
            raise CorruptChunk(chunk_id.hex(), str(self.root), "chunk is missing from the repository")
        stored = self._pread(ref)
        if len(stored) != ref.stored_len:
            raise CorruptChunk(chunk_id.hex(), ref.pack, "pack file is truncated")
        if ref.codec & CODEC_SEALED:
            if self._key is None:
                raise self._key_required()
            try:
                stored = self._key.open_sealed(stored, chunk_id)
            except SealedBlobError as exc:
                raise CorruptChunk(chunk_id.hex(), ref.pack, f"sealed chunk does not open: {exc}") from None
        elif self.encrypted:
            raise CorruptChunk(chunk_id.hex(), ref.pack, "chunk of an encrypted repository is stored unsealed")
        try:
            plain = (
                self._decompressor().decompress(stored, max_output_size=ref.plain_len)
                if ref.codec & ~CODEC_SEALED == CODEC_ZSTD
                else stored
            )
        except zstandard.ZstdError as exc:
            raise CorruptChunk(chunk_id.hex(), ref.pack, f"cannot decompress: {exc}") from exc
        expected = self._key.chunk_id(plain) if self._key is not None else plain_chunk_id(plain)
        if expected != chunk_id:
            raise CorruptChunk(chunk_id.hex(), ref.pack, "content does not match its id")
        return plain

    def _pread(self, ref: BlobRef) -> bytes:
        with self._fd_lock:
            fd = self._fds.get(ref.pack)
            if fd is None:
                path = pack_path(self.root, ref.pack)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError as exc:
                    raise CorruptChunk("(pack)", ref.pack, "pack file is missing") from exc
                self._fds[ref.pack] = fd
                if len(self._fds) > 64:
                    os.close(self._fds.popitem(last=False)[1])
            else:
                self._fds.move_to_end(ref.pack)
            return os.pread(fd, ref.stored_len, ref.offset)

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "cctx", None)
        if comp is None:
            comp = self._local.cctx = zstandard.ZstdCompressor(level=self.compression_level)
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "dctx", None)
        if dec is None:
            dec = self._local.dctx = zstandard.ZstdDecompressor()
        return dec

    # --- snapshots ---------------------------------------------------------------------------

    def staging(self, run_id: str, part: int | None = None) -> Staging:
        """The staging of backup run `run_id` (or of its `part`, a MongoDB collection): where its
        partial tree is kept until `publish`, protecting the chunks it names from pruning (see
        `staging.py`). Not created until the run writes to it."""
        return Staging(staging_path(self.root, run_id, part))

    def publish_snapshot(self, manifest: dict[str, Any], tree_zst: bytes) -> SnapshotInfo:
        """Publish a snapshot whose tree is given whole, zstd-compressed (a small tree).

        Under a shared lock, like every publish: a prune (exclusive) sees either the staging
        tree or the manifest, never neither. Remove the staging tree only after this returns.
        Every chunk the tree names is checked against the repository as it is now, under that
        lock: a writer whose lock was taken over while it stored (another host judged it
        expired) may name chunks a prune deleted meanwhile, and such a snapshot is refused."""
        with self.locked(exclusive=False) as lock:
            self.refuse_missing(manifest["id"], self.missing_chunks(_tree_chunks(tree_zst)))
            writer = self._tree_writer(manifest["id"])
            writer.write_compressed(tree_zst)
            return self._publish(manifest, writer, lock)

    def publish_snapshot_from(self, manifest: dict[str, Any], plain_tree: BinaryIO) -> SnapshotInfo:
        """Publish a snapshot whose tree's JSON lines are read from `plain_tree`, a block at a time
        (under a shared lock, see `publish_snapshot`). The caller checks the tree's chunks with
        `missing_chunks` under the same lock first (it reads the tree anyway, for its stats)."""
        with self.locked(exclusive=False) as lock:
            writer = self._tree_writer(manifest["id"])
            try:
                write_plain_tree(writer, plain_tree, self.compression_level)
            except BaseException:
                writer.abort()
                raise
            return self._publish(manifest, writer, lock)

    @staticmethod
    def refuse_missing(snapshot_id: str, missing: set[bytes]) -> None:
        """`SourceMissing` if a tree about to be published names chunks the repository lacks."""
        if missing:
            raise SourceMissing(
                f"the tree of snapshot {snapshot_id}",
                f"{len(missing)} chunks it names are missing from the repository (pruned while this run did not "
                "hold its repository lock); nothing was published: run the job again",
            )

    def _tree_writer(self, snapshot_id: str) -> TreeWriter:
        if self.encrypted and self._key is None:
            raise self._key_required()
        path = self.root / "snapshots" / snapshot_id / "tree.jsonl.zst"
        make_dirs(path.parent)
        return TreeWriter(path, self.root / "tmp", snapshot_id, self._key)

    def _publish(self, manifest: dict[str, Any], writer: TreeWriter, lock: HeldLock) -> SnapshotInfo:
        """The tree, then the manifest: the manifest's rename makes the snapshot exist. In an
        encrypted repository the manifest carries a MAC under the key (`crypto.py`)."""
        manifest = {k: v for k, v in manifest.items() if k != "mac"}
        manifest["tree_sha256"] = writer.commit()
        # The lock must still be ours when the snapshot comes to exist: if another process took
        # it over meanwhile, a prune may have run after the chunks were checked. Retried under a
        # new lock, the check runs again.
        lock.refresh()
        deadline = lock.ensure_held()
        if self._key is not None:
            manifest["mac"] = self._key.manifest_mac(writer.path.parent.name, manifest)
        lock.check()
        if time.monotonic() >= deadline:  # the put must land well before anyone may take the lock
            raise RepositoryLockLost(self.locks.backend.where, lock.id, "too little time left to publish")
        manifest_path = writer.path.parent / MANIFEST
        write_atomic(manifest_path, json.dumps(manifest, indent=1).encode(), self.root / "tmp")
        return self._snapshot_info(writer.path.parent)

    def snapshot_exists(self, snapshot_id: str) -> bool:
        """Whether `snapshot_id` has a manifest (usable or damaged: either way the id is taken)."""
        return os.path.lexists(self.root / "snapshots" / snapshot_id / MANIFEST)

    def snapshots(self, job: str | None = None) -> list[SnapshotInfo]:
        """The usable snapshots (of `job`), oldest first; damaged ones are left out (see
        `damaged_snapshots`), so `latest`, a parent or retention never pick one."""
        found = [s for s in self._scan() if isinstance(s, SnapshotInfo)]
        return sorted((s for s in found if job is None or s.job == job), key=lambda s: (s.created_at, s.id))

    def damaged_snapshots(self) -> list[DamagedSnapshot]:
        """Snapshot directories whose manifest is not usable (not JSON, a field missing or of
        the wrong type, or, with the key of an encrypted repository, not authenticated)."""
        return sorted((s for s in self._scan() if isinstance(s, DamagedSnapshot)), key=lambda s: s.id)

    def _scan(self) -> list[SnapshotInfo | DamagedSnapshot]:
        found: list[SnapshotInfo | DamagedSnapshot] = []
        with os.scandir(self.root / "snapshots") as entries:
            for entry in entries:
                directory = Path(entry.path)
                if entry.is_symlink():
                    found.append(DamagedSnapshot(entry.name, "snapshot directory is a symbolic link", directory))
                    continue
                # lexists: a manifest that is a dangling symlink is damaged, not absent
                if not entry.is_dir(follow_symlinks=False) or not os.path.lexists(directory / MANIFEST):
                    continue  # a stray file, or a publish in progress (its tree before its manifest)
                loaded = load_manifest(directory, self._key, self.encrypted)
                if isinstance(loaded, Loaded):
                    found.append(self._info_of(loaded, directory))
                else:
                    found.append(DamagedSnapshot(entry.name, loaded, directory))
        return found

    def resolve(self, ref: str, job: str | None = None) -> SnapshotInfo:
        """`latest` (of `job`), an id, or a unique prefix of one."""
        candidates = self.snapshots(job)
        if ref == "latest":
            if not candidates:
                raise SnapshotNotFound(f"latest of job {job}")
            return candidates[-1]
        matches = [s for s in candidates if s.id.startswith(ref)] if ref else []  # "" would match every id
        if len(matches) != 1:
            raise SnapshotNotFound(ref if not matches else f"{ref} (ambiguous: {len(matches)} match)")
        return matches[0]

    def open_tree(self, info: SnapshotInfo) -> BinaryIO:
        """A snapshot's tree as JSON lines, read as a stream; checked against its manifest first."""
        return plain_lines(self._compressed_tree(info))

    def tree_bytes(self, info: SnapshotInfo) -> bytes:
        """A snapshot's whole tree, zstd-compressed, in memory: for the small trees of adapters
        that store a line per collection or per chunk. A files tree is read with `open_tree`."""
        with self._compressed_tree(info) as stream:
            return stream.read()

    def open_damaged_tree(self, damaged: DamagedSnapshot) -> BinaryIO:
        """The tree of a snapshot whose manifest is damaged, unchecked (there is no trusted
        checksum to check it against): only for pruning, which keeps the chunks it still names
        rather than deleting what an operator may want to recover."""
        return plain_lines(
            compressed_stream(damaged.path / "tree.jsonl.zst", damaged.id, self._key, self.encrypted, self._key_required())
        )

    def _compressed_tree(self, info: SnapshotInfo) -> BinaryIO:
        path = info.path / "tree.jsonl.zst"
        # read again, not taken from `info`: the manifest may have changed since it was listed
        current = self._snapshot_info(info.path)
        check_stored(path, current.tree_sha256)
        return compressed_stream(path, info.id, self._key, self.encrypted, self._key_required())

    def _snapshot_info(self, directory: Path) -> SnapshotInfo:
        """The snapshot in `directory`; `CorruptChunk` naming the reason if its manifest is damaged."""
        loaded = load_manifest(directory, self._key, self.encrypted)
        if not isinstance(loaded, Loaded):
            raise CorruptChunk("(manifest)", str(directory), loaded)
        return self._info_of(loaded, directory)

    @staticmethod
    def _info_of(loaded: Loaded, directory: Path) -> SnapshotInfo:
        m = loaded.manifest
        return SnapshotInfo(
            id=m["id"],
            job=m["job"],
            kind=m["kind"],
            created_at=m["created_at"],
            run_id=m.get("run_id", ""),
            source=m.get("source", {}),
            stats=m.get("stats", {}),
            path=directory,
            authenticated=loaded.authenticated,
            parent=m.get("parent"),
            tree_sha256=m["tree_sha256"],
        )

    # --- locks -------------------------------------------------------------------------------

    @contextmanager
    def locked(self, exclusive: bool, stop: threading.Event | None = None, run_id: str | None = None) -> Iterator[HeldLock]:
        """Writers share the lock; pruning takes it alone so no chunk it deletes is in use.

        The protocol (lock objects under `locks/`, refreshed while held, stale ones taken over
        without an operator) is in `locks.py`. Taking the lock refreshes the index, so chunks
        pruned meanwhile by anyone are no longer answered as present. Re-entrant per thread.
        """
        with self.locks.hold(exclusive, stop, run_id) as (lock, new):
            if new:
                self.refresh_index()
            yield lock


def _tree_chunks(tree_zst: bytes) -> Iterator[bytes]:
    """The chunk ids a small tree's lines name (their `c` key, see the module's docstring)."""
    with plain_lines(io.BytesIO(tree_zst)) as lines:
        for line in lines:
            if line.strip():
                for chunk in json.loads(line).get("c") or ():
                    yield bytes.fromhex(chunk)

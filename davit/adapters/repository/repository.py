"""The repository: chunk store, snapshot manifests, staging, locks.

Every object goes through the storage port, `Repository.backend` (`backend.py`): a local
directory (`LocalBackend`) or a remote store. Nothing here builds a path of the repository;
the local files the Repository keeps itself (the staged trees of runs in progress and spooled
packs and trees) are under `caps.local_root` for a local repository (its `staging/` and
`tmp/`, as always) and under `local_dir` (given at open) for a remote one.

Layout (keys of the port; files of a local repository):
    config.json                 format version and chunking parameters
    packs/<xx>/<pack>.pack      compressed chunks, see `packs.py`
    index/<pack>.idx            what each pack holds
    snapshots/<id>/manifest.json  a snapshot exists once its manifest is durable (`manifests.py`:
                                  one that cannot be used is listed as damaged, nothing else)
    snapshots/<id>/tree.jsonl.zst the tree the manifest describes
    staging/<run>/              a backup run's partial tree while it is in progress (`staging.py`);
                                in a remote repository, segments of it uploaded at each checkpoint
                                (`segments.py`), the tree itself being a file of the backing-up host
    tmp/                        temporary names of objects not yet in place (a local or SFTP backend's)
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
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from davit.adapters.repository import repoconfig, snapshots
from davit.adapters.repository.backend import Backend, ObjectMissing
from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.cache import LocalCache, cache_key, remove_old_files
from davit.adapters.repository.chunkindex import ChunkIndex
from davit.adapters.repository.chunking import Chunker, Chunking
from davit.adapters.repository.compressibility import incompressible
from davit.adapters.repository.crypto import RepositoryKey, RepositoryKeyError, SealedBlobError, plain_chunk_id
from davit.adapters.repository.fsutil import make_dirs
from davit.adapters.repository.locks import HeldLock, RepositoryLocks, StorageLockBackend
from davit.adapters.repository.manifests import Loaded, load_manifest, manifest_key
from davit.adapters.repository.packs import (
    CODEC_RAW,
    CODEC_SEALED,
    CODEC_ZSTD,
    BlobRef,
    PackWriter,
    index_key,
    pack_key,
)
from davit.adapters.repository.segments import Segments
from davit.adapters.repository.snapshots import DamagedSnapshot, SnapshotInfo
from davit.adapters.repository.staging import (
    STAGING,
    Staging,
    ended_runs_staging,
    remove_staging,
    staged_runs,
    staged_trees,
    staging_path,
)
from davit.adapters.repository.trees import (
    TreeWriter,
    check_stored,
    compressed_stream,
    fetch_tree,
    plain_lines,
    tree_key,
    write_plain_tree,
)
from davit.adapters.zstdlimit import TooLarge, decompress_bounded
from davit.domain.errors import (
    BackendDenied,
    CorruptChunk,
    PermanentError,
    RepositoryLockLost,
    SnapshotNotFound,
    SourceMissing,
)

FORMAT_VERSION = repoconfig.FORMAT_VERSION
log = logging.getLogger("davit.repository")
SPOOL_GRACE_SECONDS = 3600.0  # a spooled file younger than this may be another Repository object's, at work
__all__ = ["DamagedSnapshot", "Repository", "SnapshotInfo"]


class Repository:
    def __init__(
        self,
        backend: Backend | Path,
        compression_level: int = 3,
        key: RepositoryKey | None = None,
        encrypted: bool = False,
        local_dir: Path | None = None,
        uuid: object = None,
        chunking: Chunking | None = None,
    ) -> None:
        self.backend: Backend = LocalBackend(backend) if isinstance(backend, Path) else backend
        # This host's files of the repository: staged trees (`staging/`) and spooled packs and
        # trees (`tmp/`). In a local repository, the repository itself, so a prune of any davitd
        # sharing it sees every staging and a sealed pack is linked, not copied.
        home = self.backend.caps.local_root or local_dir
        if home is None:
            raise ValueError(f"{self.backend.where}: a remote repository needs a local_dir for its staging")
        self._home = home
        self._spool = home / "tmp"
        self.compression_level = compression_level
        # how a backup cuts files into this repository; None: fixed pieces (made before it was recorded)
        self.chunking = chunking
        self.encrypted = encrypted or key is not None
        self._key = key
        # A remote repository's immutable objects (indexes, trees) are kept on this host too
        # (`cache.py`); a local one's are files here already.
        self.cache = (
            None if self.backend.caps.local_root is not None else LocalCache(home / "cache" / cache_key(uuid, self.backend.where))
        )
        self.index = ChunkIndex(self.backend, on_gone=self.forget_pack, cache=self.cache)
        self._index = self.index.entries  # chunk id -> where it is stored
        # Loaded when first needed rather than at open: a lock taken first lists `index/` anyway
        # (`locked`), and a listing before it would be one more round trip, vouching for nothing.
        self._index_due = False
        # The holds (of any thread) whose taking listed `index/`: under one of them, while it is
        # not lost, the loaded index answers `missing_chunks` (see there).
        self._listed_holds: set[HeldLock] = set()
        self._local = threading.local()
        self.locks = RepositoryLocks(StorageLockBackend(self.backend))
        self._can_delete: bool | None = None
        if self.backend.caps.can_delete is False:  # declared or probed: the locks need not try
            self.locks.can_delete = False
        # A remote repository's prune reads staged trees from segments this host uploads (see
        # `segments.py`); a local one's reads the files in the repository, so it has none.
        self.segments = (
            None
            if self.backend.caps.local_root is not None
            else Segments(
                self.backend,
                self.check_held,
                lambda: self.locks.can_delete is False or self._can_delete is False,
                self._deletes_refused,
            )
        )

    @property
    def root(self) -> Path:
        """The directory of a local repository (tests and tools that look at its files)."""
        if not isinstance(self.backend, LocalBackend):
            raise AttributeError(f"{self.backend.where} is not a local directory")
        return self.backend.root

    @property
    def is_remote(self) -> bool:
        """Whether the repository is off this host (every read a request to a server), so a
        restore reads the chunks it needs by pack span rather than one by one."""
        return self.backend.caps.local_root is None

    @property
    def where(self) -> str:
        """The repository, for messages (never a secret)."""
        return self.backend.where

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        where: Path | Backend,
        compression_level: int = 3,
        create: bool = True,
        passphrase: str | None = None,
        local_dir: Path | None = None,
        load_index: bool = True,
        chunking: Chunking | None = None,
    ) -> Repository:
        """Open (or create) the repository at `where`: a local directory or a backend.

        With `passphrase`, a new repository is created encrypted and an existing one must be
        encrypted with it. Without, an encrypted repository still opens, for listing snapshots;
        reading or writing its chunks and trees raises `RepositoryKeyError`. `local_dir` is
        this host's directory for a remote repository's staging (see the module's docstring).
        `load_index=False` skips reading every index (for removing staging only); otherwise the
        indexes are read when first needed (taking a lock, `has`, `encode`, a chunk not found).
        A repository created here records `chunking` (default: FastCDC, `chunking.py`).
        """
        backend: Backend = LocalBackend(where) if isinstance(where, Path) else where
        if backend.caps.local_root is None and local_dir is None:
            raise ValueError(f"{backend.where}: a remote repository needs a local_dir for its staging")
        settings = repoconfig.read_config(backend)
        if settings is None:
            if not create:
                raise PermanentError(f"{backend.where} is not a davit repository (no config.json)")
            chunking = chunking or Chunking.fastcdc()
            created, key, uuid = repoconfig.create_config(backend, passphrase, chunking)
            if created:
                recorded = chunking.with_key() if key is not None else chunking  # as create_config wrote it
                repo = cls(backend, compression_level, key, local_dir=local_dir, uuid=uuid, chunking=recorded)
                repo._make_local_layout()
                return repo
            settings = repoconfig.read_config(backend)  # another process created it meanwhile
            if settings is None:
                raise PermanentError(f"{backend.where}: its config.json was created and is gone again")
        section = settings.get("encryption")
        if section is None and passphrase is not None:
            raise RepositoryKeyError(
                f"{backend.where}: a passphrase is configured but this repository was created without encryption; "
                "remove the passphrase from its configuration or give the repository a new path"
            )
        key = RepositoryKey.open(passphrase, section, backend.where) if section is not None and passphrase else None
        repo = cls(
            backend,
            compression_level,
            key,
            encrypted=section is not None,
            local_dir=local_dir,
            uuid=settings.get("uuid"),
            chunking=repoconfig.chunking_of(settings, backend.where),
        )
        repo._make_local_layout()
        repo._index_due = load_index
        return repo

    def _make_local_layout(self) -> None:
        # The directories of a local repository exist from its creation on, as they always did
        # (an operator looking at a new repository sees its layout); a remote one has none.
        local = self.backend.caps.local_root
        if local is not None:
            for sub in ("packs", "index", "snapshots"):
                make_dirs(local / sub)
        make_dirs(self._home / STAGING)
        make_dirs(self._spool)
        if self.cache is not None:
            # Spooled packs and trees of a davitd killed mid-seal (a local repository's `tmp/` is
            # the repository's, cleaned by prune). Only old ones: another Repository object of
            # this process may be spooling into this very directory now.
            remove_old_files(self._spool, SPOOL_GRACE_SECONDS)
            self.cache.clean(SPOOL_GRACE_SECONDS)

    @staticmethod
    def change_passphrase(where: Path | Backend, old: str, new: str) -> None:
        """Seal the repository's key under `new` instead of `old`; the data is not rewritten."""
        backend: Backend = LocalBackend(where) if isinstance(where, Path) else where
        repoconfig.change_passphrase(backend, old, new)

    def refresh_index(self) -> None:
        """Bring the loaded index up to the repository as it is now (`ChunkIndex.refresh`).

        Called on every lock acquisition, so under a lock `has` answers for the repository as
        it is, not as it was when this object first looked.
        """
        self._index_due = False
        self.index.refresh()

    def _ensure_index(self) -> None:
        if self._index_due:
            self.refresh_index()

    def reload_index(self) -> None:
        """Forget what is loaded and read every index again (after packs were deleted)."""
        self.index.reload()

    def index_packs(self) -> list[str]:
        """The packs that have an index now, listed afresh."""
        return self.index.packs()

    def read_index(self, pack: str) -> list[tuple[bytes, BlobRef]] | None:
        """What pack `pack`'s index lists; None if it is gone (pruned since it was listed)."""
        return self.index.read(pack)

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
        """A pack was deleted (by anyone): a backend that keeps it open lets it go, so its disk
        space is freed now rather than when the handle is next evicted."""
        forget = getattr(self.backend, "forget", None)
        if forget is not None:
            forget(pack_key(pack))

    def delete_pack(self, pack: str) -> None:
        """Delete a pack: its index first, so a pack without an index is invisible garbage,
        never a dangling entry. Only under the exclusive lock (`retention.py`)."""
        self.backend.delete(index_key(pack))
        self.backend.delete(pack_key(pack))

    def can_delete(self) -> bool:
        """Whether this repository's credential may delete objects (a backup-only one may not:
        retention and pruning are then left to a maintenance credential, see `retention.py`).

        As the backend knows it (declared by the config's `delete = false`, found by S3's probe
        at open, or by a delete refused earlier); else found out once here by creating and
        deleting an object of our own under `tmp/`. A refused probe object stays there until a
        maintenance prune's clean-up of `tmp/` removes it."""
        known = self.backend.caps.can_delete
        if known is False:
            return False
        if self._can_delete is None:
            self._can_delete = known if known is not None else self._probe_delete()
        return self._can_delete

    def _deletes_refused(self, exc: BackendDenied) -> None:
        """A staging's delete was refused (a backup-only credential): the locks mark released
        ids from now on instead of asking the server again. (`can_delete` still probes: a
        policy may allow deleting some objects and not others.)"""
        self.locks.deletes_denied(exc)

    def _probe_delete(self) -> bool:
        key = f"tmp/probe-delete-{os.urandom(8).hex()}"
        self.backend.put_if_absent(key, b"davit: may this credential delete?")
        try:
            self.backend.delete(key)
        except BackendDenied:
            self.locks.can_delete = False
            return False
        return True

    def close(self) -> None:
        self.backend.close()

    # --- chunks ------------------------------------------------------------------------------

    def has(self, chunk_id: bytes) -> bool:
        """Whether the loaded index names the chunk. Exact while a lock is held (taking one
        refreshes the index, and no prune runs meanwhile); outside one, see `missing_chunks`."""
        self._ensure_index()
        return chunk_id in self._index

    def missing_chunks(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Which of `chunk_ids` the repository lacks as it is now: those whose pack's index is
        not in a fresh listing of `index/`. Sound without asking for each pack (a request each on
        a remote store): a prune deletes a pack's index before the pack, and only under the
        exclusive lock, so under a shared one a listed index means its pack is there.
        (`repository check` still looks at every pack.)

        Under a lock whose taking listed `index/` (`locked`) and that is not lost, the loaded
        index is that fresh listing already, and answers without listing again: a prune needs
        the exclusive lock, so none has run since that listing, and every pack it named still has
        its index and pack (a prune deletes both, index first, only under that lock); the packs
        sealed since by this object were added as they were sealed; those sealed by others since
        are not loaded, so a chunk only they hold reads as missing (a refusal, never a wrong
        "present"). Whether the lock really was held all along (not taken over by another host
        that judged it expired, then pruned) is what every publish proves before its manifest is
        created (`_publish`: a refresh, which reads back the previous generation, then
        `ensure_held`; once lost, lost for good): a takeover at any time since the lock was taken
        fails the publish with `RepositoryLockLost`, and its retry takes a new lock, which lists
        again. A fresh listing here instead would only have turned that into a `SourceMissing`
        one step earlier. Outside any lock, or under one already known lost, this lists."""
        held = self.locks.current()
        if held is None or held not in self._listed_holds or held.lost:
            self.refresh_index()
        return {cid for cid in chunk_ids if cid not in self._index}

    def encode(
        self, plain: bytes | memoryview, *, text: bool = False, level: int | None = None
    ) -> tuple[bytes, bytes | memoryview | None, int]:
        """Name `plain`; compress (and seal) it only if the repository lacks it. (id, stored, codec).
        `text`: the caller knows `plain` is text (SQL statements), so it skips the sample.
        `level`: zstd's level for this chunk (default: the repository's `compression_level`)."""
        key = self._key
        if key is None and self.encrypted:
            raise self._key_required()
        cid = key.chunk_id(plain) if key is not None else plain_chunk_id(plain)
        self._ensure_index()
        if cid in self._index:
            return cid, None, CODEC_RAW
        stored, codec = self._compressed(plain, text, level)
        if key is not None:
            return cid, key.seal(stored, cid), codec | CODEC_SEALED
        return cid, stored, codec

    def _compressed(
        self, plain: bytes | memoryview, text: bool = False, level: int | None = None
    ) -> tuple[bytes | memoryview, int]:
        """`plain` compressed (CODEC_ZSTD), or as it is (CODEC_RAW) if zstd would not make it
        smaller: judged first on a sample (`incompressible`), so random or already compressed
        data (archives, media, encrypted files) is not run through zstd at all. `text` (SQL
        statements: binary values are hex literals, half their size under zstd even when
        random) passes any sample, so it is compressed without one; should it not shrink after
        all, it is stored raw as below. Either way the chunk's id (over its plain bytes) and
        what a read returns are the same."""
        if text or not incompressible(plain, self._compressor()):
            stored = self._compressor(level).compress(plain)
            if len(stored) < len(plain):
                return stored, CODEC_ZSTD
        # Immutable bytes are stored as they are (a pack writes them later, from its thread);
        # anything else is copied, as its owner may reuse it once `encode` returns.
        owner = plain.obj if isinstance(plain, memoryview) else plain
        return (plain if isinstance(owner, bytes) else bytes(plain)), CODEC_RAW

    def chunker(self, fixed_size: int) -> Chunker:
        """How a backup cuts files into this repository: its recorded chunking (seeded by its
        key if encrypted), or fixed pieces of `fixed_size` if it was made before one was recorded."""
        chunking = self.chunking or Chunking.fixed(fixed_size)
        if not chunking.keyed:
            return chunking.chunker()
        if self._key is None:
            raise self._key_required()
        return chunking.chunker(self._key.chunker_seed())

    def chunk_id(self, plain: bytes | memoryview) -> bytes:
        """The id `plain` has (or would have) in this repository."""
        if self._key is None and self.encrypted:
            raise self._key_required()
        return self._key.chunk_id(plain) if self._key is not None else plain_chunk_id(plain)

    def _key_required(self) -> RepositoryKeyError:
        return RepositoryKeyError(
            f"{self.backend.where} is encrypted: configure the passphrase of this repository "
            "(passphrase_env or passphrase_file in its [repositories.NAME] section)"
        )

    def new_pack(self) -> PackWriter:
        return PackWriter(self.backend, self._spool, os.urandom(16).hex())

    def seal_pack(self, writer: PackWriter) -> list[bytes]:
        """Make a pack durable and visible; the ids of the chunks it holds.

        Call it under a lock (`locked`), and name its chunks in a staging tree before that lock
        is released: a prune counts a sealed pack's chunks as used only once a tree names them.
        Refused (`RepositoryLockLost`) once a lock held through this object is lost: a prune
        may have taken over, and the pack would dedupe against chunks it deletes.
        """
        self.locks.check_held()
        entries = writer.seal()
        self.index.add(writer.pack_id, entries)
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
            raise CorruptChunk(chunk_id.hex(), self.backend.where, "chunk is missing from the repository")
        return self._open_stored(chunk_id, ref, self._pread(ref))

    def read_span(self, pack: str, members: Sequence[tuple[bytes, BlobRef]]) -> list[bytes | CorruptChunk]:
        """Chunks of one pack fetched in one ranged read (from the first member's offset to the
        last one's end, gaps included), each verified as `read_chunk` does: its plain bytes, or
        the `CorruptChunk` it fails with, in `members`' order (one bad chunk fails only itself)."""
        start = min(ref.offset for _cid, ref in members)
        end = max(ref.offset + ref.stored_len for _cid, ref in members)
        try:
            data = self.backend.get_range(pack_key(pack), start, end - start)
        except ObjectMissing:
            missing = CorruptChunk("(pack)", pack, "pack file is missing")
            return [missing for _ in members]
        out: list[bytes | CorruptChunk] = []
        for cid, ref in members:
            try:
                out.append(self._open_stored(cid, ref, data[ref.offset - start : ref.offset - start + ref.stored_len]))
            except CorruptChunk as exc:
                out.append(exc)
        return out

    def _open_stored(self, chunk_id: bytes, ref: BlobRef, stored: bytes) -> bytes:
        """The plain bytes of chunk `chunk_id` read as `stored` from `ref`, verified against its id."""
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
                decompress_bounded(stored, ref.plain_len, self._decompressor())
                if ref.codec & ~CODEC_SEALED == CODEC_ZSTD
                else stored
            )
        except (zstandard.ZstdError, TooLarge) as exc:
            # (a frame declaring more than the index's length is refused before any memory is taken)
            raise CorruptChunk(chunk_id.hex(), ref.pack, f"cannot decompress: {exc}") from exc
        expected = self._key.chunk_id(plain) if self._key is not None else plain_chunk_id(plain)
        if expected != chunk_id:
            raise CorruptChunk(chunk_id.hex(), ref.pack, "content does not match its id")
        return plain

    def _pread(self, ref: BlobRef) -> bytes:
        try:
            return self.backend.get_range(pack_key(ref.pack), ref.offset, ref.stored_len)
        except ObjectMissing:
            raise CorruptChunk("(pack)", ref.pack, "pack file is missing") from None

    def _compressor(self, level: int | None = None) -> zstandard.ZstdCompressor:
        """This thread's compressor at `level` (default: the repository's `compression_level`)."""
        level = self.compression_level if level is None else level
        made = getattr(self._local, "cctx", None)
        if made is None:
            made = self._local.cctx = {}
        comp = made.get(level)
        if comp is None:
            comp = made[level] = zstandard.ZstdCompressor(level=level)
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
        return Staging(staging_path(self._home, run_id, part), self.segments)

    def check_held(self) -> None:
        """`RepositoryLockLost` if a lock taken through this object was lost (no I/O)."""
        self.locks.check_held()

    def staged_segment_chunks(self, grace_seconds: float) -> set[bytes]:
        """The chunks the staging segments of every host name (a remote repository; nothing
        for a local one, whose staged trees are `staged_trees`): what pruning must protect
        besides this host's staged trees. Segments of a run marked ended more than
        `grace_seconds` ago protect nothing."""
        if self.segments is None:
            return set()
        return self.segments.protected_chunks(time.time() - grace_seconds)

    def remove_ended_segments(self, grace_seconds: float, before_delete: Any) -> int:
        """Delete the segments of runs marked ended more than `grace_seconds` ago (a prune's
        hygiene); how many stagings went."""
        if self.segments is None:
            return 0
        return self.segments.remove_ended(time.time() - grace_seconds, before_delete)

    def staged_trees(self) -> list[Path]:
        """The staged trees of every run in progress (what pruning must protect): local files."""
        return staged_trees(self._home)

    def staged_runs(self) -> list[str]:
        """The runs that have staging here."""
        return staged_runs(self._home)

    def remove_staging(self, run_ids: Iterable[str]) -> list[str]:
        """Remove the staging of runs that ended (nothing resumes from it), with their segments
        in a remote repository (marked ended instead where the credential may not delete);
        what was removed."""
        runs = set(run_ids)
        removed = []
        if self.segments is not None and runs:  # first: a tree file gone means its segments are
            removed += self.segments.remove_runs(runs)
        return [remove_staging(path) for path in ended_runs_staging(self._home, runs)] + removed

    def publish_snapshot(self, manifest: dict[str, Any], tree_zst: bytes) -> SnapshotInfo:
        """Publish a snapshot whose tree is given whole, zstd-compressed (a small tree).

        Under a shared lock, like every publish: a prune (exclusive) sees either the staging
        tree or the manifest, never neither. Remove the staging tree only after this returns.
        Every chunk the tree names is checked against the repository as it is now, under that
        lock: a writer whose lock was taken over while it stored (another host judged it
        expired) may name chunks a prune deleted meanwhile, and such a snapshot is refused."""
        with self.locked(exclusive=False) as lock:
            self.refuse_missing(manifest["id"], self.missing_chunks(_tree_chunks(tree_zst)))
            self._refuse_existing(manifest["id"])
            writer = self._tree_writer(manifest["id"])
            writer.write_compressed(tree_zst)
            return self._publish(manifest, writer, lock)

    def publish_snapshot_from(self, manifest: dict[str, Any], plain_tree: BinaryIO) -> SnapshotInfo:
        """Publish a snapshot whose tree's JSON lines are read from `plain_tree`, a block at a time
        (under a shared lock, see `publish_snapshot`). The caller checks the tree's chunks under the
        same lock first: with `missing_chunks`, or, if it staged the tree whole under this very
        lock, by naming a chunk only once this lock's index held it (files.backup's `_publish`)."""
        with self.locked(exclusive=False) as lock:
            self._refuse_existing(manifest["id"])
            writer = self._tree_writer(manifest["id"])
            try:
                write_plain_tree(writer, plain_tree)
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

    def _refuse_existing(self, snapshot_id: str) -> None:
        # Checked before the tree is written: the tree's put would replace the one an existing
        # manifest vouches for. (A resumed publish asks `snapshot_exists` first.)
        if self.snapshot_exists(snapshot_id):
            raise PermanentError(f"{self.backend.where}: snapshot {snapshot_id} exists already; nothing was published")

    def _tree_writer(self, snapshot_id: str) -> TreeWriter:
        if self.encrypted and self._key is None:
            raise self._key_required()
        return TreeWriter(self.backend, self._spool, snapshot_id, self._key)

    def _publish(self, manifest: dict[str, Any], writer: TreeWriter, lock: HeldLock) -> SnapshotInfo:
        """The tree, then the manifest: creating the manifest makes the snapshot exist. In an
        encrypted repository the manifest carries a MAC under the key (`crypto.py`)."""
        snapshot_id = manifest["id"]
        manifest = {k: v for k, v in manifest.items() if k != "mac"}
        manifest["tree_sha256"] = writer.commit()
        # The lock must still be ours when the snapshot comes to exist: if another process took
        # it over meanwhile, a prune may have run after the chunks were checked. Retried under a
        # new lock, the check runs again.
        lock.refresh_for_publish()
        deadline = lock.ensure_held()
        if self._key is not None:
            manifest["mac"] = self._key.manifest_mac(snapshot_id, manifest)
        data = json.dumps(manifest, indent=1).encode()
        key = manifest_key(snapshot_id)
        lock.check()
        if time.monotonic() >= deadline:  # the put must land well before anyone may take the lock
            raise RepositoryLockLost(self.backend.where, lock.id, "too little time left to publish")
        # Created, never replaced: a manifest that exists is a published snapshot. One with our
        # very bytes is this publish's own, whose answer was lost (a remote backend's retry).
        if not self.backend.put_if_absent(key, data) and self.backend.get(key, max_bytes=len(data) + 1) != data:
            raise PermanentError(f"{self.backend.where}: snapshot {snapshot_id} was published by another writer meanwhile")
        return self._snapshot_info(snapshot_id)

    def snapshot_exists(self, snapshot_id: str) -> bool:
        """Whether `snapshot_id` has a manifest (usable or damaged: either way the id is taken)."""
        return snapshots.exists(self.backend, snapshot_id)

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
        return snapshots.scan(self.backend, self._key, self.encrypted)

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
        fh = fetch_tree(self.backend, damaged.id, self._spool, damaged.where)
        return plain_lines(compressed_stream(fh, damaged.where, damaged.id, self._key, self.encrypted, self._key_required()))

    def _compressed_tree(self, info: SnapshotInfo) -> BinaryIO:
        # the manifest read again, not taken from `info`: it may have changed since it was listed
        current = self._snapshot_info(info.id)
        cached = None
        if self.cache is not None and current.tree_sha256:
            # checked against the manifest's sha256 whether it was kept or just fetched
            try:
                cached = self.cache.tree(current.tree_sha256, lambda dst: self.backend.get_to(tree_key(info.id), dst))
            except ObjectMissing:
                cached = None  # reported below, as without a cache
        if cached is not None:
            fh: BinaryIO = cached
        else:
            fh = fetch_tree(self.backend, info.id, self._spool, info.where)
            check_stored(fh, current.tree_sha256, info.where)
        return compressed_stream(fh, info.where, info.id, self._key, self.encrypted, self._key_required())

    def _snapshot_info(self, snapshot_id: str) -> SnapshotInfo:
        """Snapshot `snapshot_id`; `CorruptChunk` naming the reason if its manifest is damaged."""
        where = snapshots.snapshot_where(self.backend, snapshot_id)
        loaded = load_manifest(self.backend, snapshot_id, self._key, self.encrypted)
        if not isinstance(loaded, Loaded):
            raise CorruptChunk("(manifest)", where, loaded or "manifest is gone (the snapshot was forgotten)")
        return snapshots.info_of(loaded, where)

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Forget a snapshot: its manifest first, so a half-removed snapshot no longer exists
        rather than being torn; then everything else under its name. Only under the exclusive
        lock (`retention.py`)."""
        self.backend.delete(manifest_key(snapshot_id))
        for info in list(self.backend.list(f"{snapshots.PREFIX}{snapshot_id}/")):
            self.backend.delete(info.key)

    # --- locks -------------------------------------------------------------------------------

    @contextmanager
    def locked(self, exclusive: bool, stop: threading.Event | None = None, run_id: str | None = None) -> Iterator[HeldLock]:
        """Writers share the lock; pruning takes it alone so no chunk it deletes is in use.

        The protocol (lock objects under `locks/`, refreshed while held, stale ones taken over
        without an operator) is in `locks.py`. Taking the lock refreshes the index, so chunks
        pruned meanwhile by anyone are no longer answered as present. Re-entrant per thread.
        """
        with self.locks.hold(exclusive, stop, run_id) as (lock, new):
            if not new:
                yield lock
                return
            self.refresh_index()
            self._listed_holds.add(lock)
            try:
                yield from self._held(lock)
            finally:
                self._listed_holds.discard(lock)

    def _held(self, lock: HeldLock) -> Iterator[HeldLock]:
        if self.segments is None:
            yield lock
            return
        try:
            yield lock
        except BaseException:
            # Still protect what was staged under this lock; the error that ended it is the one to raise.
            try:
                self.segments.sync_all()
            except Exception as exc:
                log.warning("%s: staged trees not uploaded before the lock was released: %s", self.where, exc)
            raise
        # A pack sealed under this lock is named by no object of the repository until its
        # staged lines are: upload them while the lock still keeps every prune out.
        self.segments.sync_all()


def _tree_chunks(tree_zst: bytes) -> Iterator[bytes]:
    """The chunk ids a small tree's lines name (their `c` key, see the module's docstring)."""
    with plain_lines(io.BytesIO(tree_zst)) as lines:
        for line in lines:
            if line.strip():
                for chunk in json.loads(line).get("c") or ():
                    yield bytes.fromhex(chunk)

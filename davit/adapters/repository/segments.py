"""A remote repository's view of the stagings of this host: their staged trees, uploaded in segments.

A staged tree is a local file (`staging.py`): adapters append to it, truncate it to a
checkpoint and fsync it, none of which an object store can do. For a local repository it lives
in the repository, where every prune sees it. For a remote one it lives in davitd's home, where
a prune run by another host cannot see it: that prune would delete the chunks of packs a backup
here has sealed but not yet published. So at every checkpoint, before the checkpoint is
recorded, the bytes staged since the last upload go to the repository as one object,

    staging/<run>[.c<N>]/<offset:016x>-<sha8>.jsonl.zst

(whole JSON lines, zstd-compressed, created with `put_if_absent`), and a prune reads the `c`
keys of every segment it lists besides the staged trees of its own host. Segments are only ever
extra protection: a resume truncates only the local file, so segments past its checkpoint
protect chunks nothing will name (harmless, they go with the run's staging), and a prune never
deletes anything because of what a segment says.

When the run ends its segments are deleted with its local staging. A credential that may not
delete writes `staging/<run>/ended` instead; a prune (which may delete) treats the segments of a
run marked ended longer than its grace period as protecting nothing and deletes them. Someone
who can write the repository can forge that marker: at worst it unprotects the chunks of a
running backup, which that backup's publish then finds missing (`missing_chunks` under its
lock) and refuses to publish; nothing published is lost. (The same credential can delete packs.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import zstandard

from davit.adapters.repository.backend import Backend, BackendDenied, ObjectInfo, check_key
from davit.domain.errors import PermanentError

PREFIX = "staging/"
ENDED = "ended"  # staging/<run>/ended: the run ended, its segments go at the next prune
MAX_PLAIN = 16 << 20  # bytes of staged tree per segment, at most (a checkpoint's delta is usually far less)
MAX_STORED = 64 << 20  # a segment larger than this was not written by davit
SEGMENT = re.compile(r"[0-9a-f]{16}-[0-9a-f]{8}(?:[0-9a-f]{56})?\.jsonl\.zst")
_HEX_ID = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("davit.repository.segments")


def run_of(staging_name: str) -> str:
    """The run id a staging directory belongs to (`<run>` or `<run>.c<N>`)."""
    return staging_name.split(".", 1)[0]


class Segments:
    """Uploads the staged trees opened through one Repository object, and reads and removes the
    segments of every host. `check_lock` raises if the lock this process writes under is lost
    (`RepositoryLocks.check_held`): a segment uploaded then could lie about what a prune may do."""

    def __init__(
        self,
        backend: Backend,
        check_lock: Callable[[], None],
        deletes_denied: Callable[[], bool] = lambda: False,
        on_denied: Callable[[BackendDenied], None] = lambda exc: None,
    ) -> None:
        self.backend = backend
        self._check_lock = check_lock
        # known already (declared `delete = false`, probed, or refused earlier): mark, never ask
        self._deletes_denied = deletes_denied
        self._on_denied = on_denied  # told of a delete refused here, so the locks do not ask again
        self._guard = threading.Lock()
        self._synced: dict[str, int] = {}  # staging name -> bytes of its tree uploaded (in this process)
        self._trees: dict[str, Path] = {}
        self._locks: dict[str, threading.Lock] = {}
        # ended runs whose segments a listing here found gone, removed or marked ended: davitd asks
        # again for every ended run at each run's end, and an ended run uploads nothing more
        self._settled: set[str] = set()
        # What this process knows without listing. `_keys[name]`: every key it may have uploaded
        # for a staging whose tree it created (no tree file, so no segment, existed before: a
        # tree's segments are deleted before its file). `_run_names[run]`: every staging of a run
        # whose first staging this process created while no other of the run had a tree here.
        # Removing those costs deletes only; any other staging is found by a listing.
        self._keys: dict[str, set[str]] = {}
        self._run_names: dict[str, set[str]] = {}
        self._runs_seen: set[str] = set()

    # --- this host's stagings ------------------------------------------------------------------

    def opened(self, name: str, tree: Path, length: int, created: bool = False, others: bool = True) -> None:
        """The staged tree `tree` of staging `name` was (re)opened at a checkpoint's `length`:
        everything before it was uploaded before that checkpoint was recorded. `created`: the
        tree file was created by this opening (no process uploaded a segment of it before);
        `others`: another staging of the same run has a tree file here."""
        run = run_of(name)
        with self._guard:
            self._trees[name] = tree
            self._synced[name] = length
            self._locks.setdefault(name, threading.Lock())
            if run not in self._runs_seen:
                self._runs_seen.add(run)
                if created and not others:
                    self._run_names[run] = set()
            if name in self._keys:
                return  # created by this process earlier: reopened after a retry, still all known
            if created:
                self._keys[name] = set()
                if run in self._run_names:
                    self._run_names[run].add(name)
            else:  # a tree this process did not create: its run's segments may include others' uploads
                self._run_names.pop(run, None)

    def forget(self, name: str) -> None:
        with self._guard:
            self._trees.pop(name, None)
            self._synced.pop(name, None)

    def sync(self, name: str, upto: int | None = None) -> int:
        """Upload the whole lines of staging `name`'s tree between the last upload and `upto`
        (its end if None); the offset uploaded up to. A staging not opened here has nothing."""
        with self._guard:
            tree, lock = self._trees.get(name), self._locks.get(name)
        if tree is None or lock is None:
            return 0
        with lock:
            start = self._synced.get(name, 0)
            try:
                fd = os.open(tree, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return start  # removed meanwhile (published, or the run ended)
            try:
                end = os.fstat(fd).st_size if upto is None else upto
                while start < end:
                    data = os.pread(fd, min(end - start, MAX_PLAIN), start)
                    whole = data[: data.rfind(b"\n") + 1]
                    if not whole:
                        break  # a line still being written (or longer than MAX_PLAIN: never, by davit)
                    self._check_lock()
                    self._upload(name, start, whole)
                    start += len(whole)
                    with self._guard:
                        if name in self._synced:
                            self._synced[name] = start
            finally:
                os.close(fd)
            return start

    def sync_all(self) -> None:
        """Upload what every staged tree opened here holds (a lock is about to be released)."""
        with self._guard:
            names = list(self._trees)
        for name in names:
            self.sync(name)

    def _upload(self, name: str, offset: int, data: bytes) -> None:
        stored = zstandard.ZstdCompressor(level=3).compress(data)
        digest = hashlib.sha256(data).hexdigest()
        key = check_key(f"{PREFIX}{name}/{offset:016x}-{digest[:8]}.jsonl.zst")
        self._may_exist(name, key)  # before the request: a lost answer may still have stored it
        if self.backend.put_if_absent(key, stored):
            return
        # There already: this very upload, whose answer was lost (a torn connection, a resume
        # redoing the same lines). Only a different object (an 8-hex-digit collision, or one
        # planted) needs the long name.
        if self.backend.get(key, max_bytes=MAX_STORED) != stored:
            long_key = check_key(f"{PREFIX}{name}/{offset:016x}-{digest}.jsonl.zst")
            self._may_exist(name, long_key)
            self.backend.put_if_absent(long_key, stored)

    def _may_exist(self, name: str, key: str) -> None:
        with self._guard:
            known = self._keys.get(name)
            if known is not None:
                known.add(key)

    # --- every host's segments -----------------------------------------------------------------

    def listing(self) -> dict[str, list[ObjectInfo]]:
        """The objects under `staging/`, by staging name (names that cannot be a staging's are
        passed over)."""
        found: dict[str, list[ObjectInfo]] = {}
        for info in self.backend.list(PREFIX):
            name, _, rest = info.key[len(PREFIX) :].partition("/")
            if name and not name.startswith(".") and rest and "/" not in rest:
                found.setdefault(name, []).append(info)
        return found

    def ended_runs(self, listing: dict[str, list[ObjectInfo]], cutoff: float) -> set[str]:
        """The runs marked ended before `cutoff` (the server's mtime): their segments protect nothing."""
        marker = f"/{ENDED}"
        return {
            n for n, objs in listing.items() if "." not in n and any(o.key.endswith(marker) and o.mtime < cutoff for o in objs)
        }

    def protected_chunks(self, cutoff: float) -> set[bytes]:
        """Every chunk id a segment of a run not ended (before `cutoff`) names. Read leniently:
        what is read only ever protects more; a segment that cannot be read at all stops the
        prune (`PermanentError`) rather than leaving its chunks unprotected."""
        listing = self.listing()
        ended = self.ended_runs(listing, cutoff)
        refs: set[bytes] = set()
        for name, objs in listing.items():
            if run_of(name) in ended:
                continue
            for info in objs:
                if SEGMENT.fullmatch(info.key.rsplit("/", 1)[1]):
                    refs |= self._chunks_of(info.key)
        return refs

    def _chunks_of(self, key: str) -> set[bytes]:
        try:
            stored = self.backend.get(key, max_bytes=MAX_STORED)
        except KeyError:
            return set()  # removed since listed: its run ended
        except ValueError as exc:  # ObjectTooLarge
            raise PermanentError(
                f"{self.backend.where}/{key}: not a staged tree segment ({exc}); remove it, then prune again"
            ) from None
        found: set[bytes] = set()
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)) as reader:
                for line in io.BufferedReader(reader):
                    found |= _line_chunks(line)
        except zstandard.ZstdError:
            log.warning("%s/%s: a staged tree segment is damaged; its chunks read so far are kept", self.backend.where, key)
        return found

    def remove_ended(self, cutoff: float, before_delete: Callable[[], None]) -> int:
        """Delete the segments of runs marked ended before `cutoff` (a prune's hygiene, under its
        exclusive lock: `before_delete` checks it is still held); how many stagings went."""
        listing = self.listing()
        ended = self.ended_runs(listing, cutoff)
        # a run's parts first, then its own directory, whose `ended` marker goes last of all
        names = sorted((n for n in listing if run_of(n) in ended), key=lambda n: ("." not in n, n))
        for name in names:
            before_delete()
            self.remove_names([name], listing)
        return len(names)

    def remove_runs(self, run_ids: Iterable[str]) -> list[str]:
        """Delete the segments of ended runs; with a credential that may not delete, mark each
        run ended instead (a prune deletes them after its grace period). What was removed or
        marked. Only runs whose segments this process cannot name (`opened`) cost a listing."""
        with self._guard:
            runs = set(run_ids) - self._settled
            known = {r: sorted(n for n in self._run_names[r] if self._keys.get(n)) for r in runs if r in self._run_names}
        unknown = runs - known.keys()
        listing = self.listing() if unknown else {}
        found = {r: sorted(n for n in listing if run_of(n) == r) for r in unknown}
        done: list[str] = []
        for run, names in sorted((known | found).items()):
            if not names:
                continue
            if self.remove_or_mark(run, names, listing if run in unknown else None):
                done += [f"{self.backend.where}/{PREFIX}{n}/" for n in names]
            else:
                done.append(f"{self.backend.where}/{PREFIX}{run}/{ENDED}")
        with self._guard:
            self._settled |= runs
            for run in runs:
                for name in self._run_names.pop(run, ()):
                    self._keys.pop(name, None)
        return done

    def remove_or_mark(self, run: str, names: list[str], listing: dict[str, list[ObjectInfo]] | None = None) -> bool:
        """Delete the segments `names` of `run`; True. With a credential that may not delete,
        mark the run ended instead (a maintenance prune deletes them after its grace); False."""
        if not self._deletes_denied():
            try:
                self.remove_names(names, listing)
                return True
            except BackendDenied as exc:
                self._on_denied(exc)
        self.backend.put_if_absent(check_key(f"{PREFIX}{run}/{ENDED}"), b"")
        with self._guard:  # settled by the marker: the run's end need not mark it again
            for name in names:
                if name in self._keys:
                    self._keys[name] = set()
        return False

    def remove_names(self, names: Iterable[str], listing: dict[str, list[ObjectInfo]] | None = None) -> None:
        """Delete every object of these stagings (the `ended` marker last): by the keys this
        process uploaded when it knows them all (`opened`), else by a listing (given, or made)."""
        names = list(names)
        with self._guard:
            known = {n: sorted(self._keys[n]) for n in names if n in self._keys}
        if listing is None and len(known) == len(names):
            for name in names:
                self.forget(name)
                for key in known[name]:
                    self.backend.delete(key)
                    with self._guard:
                        self._keys.get(name, set()).discard(key)
            return
        listing = self.listing() if listing is None else listing
        for name in names:
            self.forget(name)
            objs = sorted(listing.get(name, []), key=lambda o: o.key.endswith(f"/{ENDED}"))
            for info in objs:
                self.backend.delete(info.key)
            with self._guard:
                if name in self._keys:
                    self._keys[name] = set()


def _line_chunks(line: bytes) -> set[bytes]:
    """The chunk ids of one JSON line's `c` key; nothing for a line that does not read."""
    try:
        entry = json.loads(line)
    except ValueError:
        return set()
    chunks = entry.get("c") if isinstance(entry, dict) else None
    if not isinstance(chunks, list):
        return set()
    return {bytes.fromhex(c) for c in chunks if isinstance(c, str) and _HEX_ID.fullmatch(c)}

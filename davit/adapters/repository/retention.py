"""Retention and pruning: forget snapshots a policy does not keep, then delete the packs no
kept snapshot and no backup in progress still references.

A pack is deleted only when none of its chunks is referenced; a pack mostly unreferenced is
first rewritten with its live chunks (copied as stored, never recompressed) into a new pack
that is sealed before the old one goes.

Why this is safe against a concurrent backup, in this process or another one sharing the
repository: pruning holds the repository lock exclusively (`locks.py`) from listing the
snapshots to its last deletion. Every writer holds it shared while it seals packs and until
their chunks are named by a staging tree, and every publish holds it shared from the tree's
first byte to the durable manifest, removing its staging tree only after. So what pruning
reads (manifests, trees, staging trees) names every chunk any backup relies on, and no chunk
can be picked as "already stored" while its pack is being removed. Before each deletion the
prune checks that its lock is still its own and freshly refreshed (`HeldLock.ensure_held`),
and stops with `RepositoryLockLost` if not.

Hygiene: the staging segments of runs marked ended (by a davitd whose credential may not
delete, `segments.py`) longer than the grace period ago; temporary objects (`tmp/*`, a local
or SFTP backend's) and packs without an index
older than a grace period (by the storage's mtime) are left-overs of writers that died (a pack
is created before its index); they are removed too. The grace period is a second guard, for a writer that lost its
lock without knowing it.

A backup-only credential (ransomware-resistant writing: it may create objects but not delete
or replace them) cannot forget or prune: `apply_retention` and `prune` then raise
`DeletesDenied` before taking the exclusive lock (which would only hold up the writers), or,
if a delete is refused midway (a policy that allows deleting some prefixes only), at that
delete: every order of deletions here leaves a consistent repository when cut short. A
backup's retention step reports it skipped (`steps.py`); an operator runs `davit repository
prune NAME` (`prune_repository`) with a maintenance credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from davit.adapters.repository.fsutil import NotRegularFile, open_regular
from davit.adapters.repository.locks import HeldLock
from davit.adapters.repository.packs import PACK_ID
from davit.adapters.repository.repository import DamagedSnapshot, Repository
from davit.adapters.repository.treeformat import read_lines
from davit.domain.errors import BackendDenied, DeletesDenied
from davit.domain.jobs import Retention
from davit.domain.retention import snapshots_to_keep

REPACK_WHEN_UNUSED_ABOVE = 0.5
GRACE_SECONDS = 3600.0  # left-overs younger than this may belong to a writer still at work
log = logging.getLogger("davit.repository.retention")


def require_delete(repo: Repository, operation: str) -> None:
    """`DeletesDenied` if this repository's credential may not delete (see `Repository.can_delete`)."""
    if not repo.can_delete():
        raise DeletesDenied(repo.where, operation, DELETES_DENIED)


DELETES_DENIED = "this credential may not delete objects: retention and pruning need a maintenance credential"


@contextmanager
def _deleting(repo: Repository) -> Iterator[None]:
    """A delete refused midway is `DeletesDenied` (what was deleted before it is consistent)."""
    try:
        yield
    except DeletesDenied:
        raise
    except BackendDenied as exc:
        if not exc.operation.startswith("delete"):
            raise
        raise DeletesDenied(repo.where, exc.operation, f"{DELETES_DENIED} ({exc})") from None


def apply_retention(repo: Repository, job: str, policy: Retention, grace_seconds: float = GRACE_SECONDS) -> dict[str, Any]:
    """Forget `job`'s snapshots that `policy` does not keep, then prune. `DeletesDenied` if the
    credential may not delete."""
    require_delete(repo, "retention")
    with _deleting(repo), repo.locked(exclusive=True) as lock:
        keep, forgotten = _forget(repo, lock, job, policy)
        if forgotten:
            pruned = prune(repo, grace_seconds)
        else:  # nothing became unreferenced: only the cheap clean-up
            leftovers = _remove_leftovers(repo, lock, grace_seconds)
            pruned = {"packs_deleted": 0, "packs_rewritten": 0, "bytes_freed": leftovers.pop("_bytes"), **leftovers}
    return {"kept": sorted(keep), "forgotten": forgotten, **pruned}


def _forget(repo: Repository, lock: HeldLock | None, job: str, policy: Retention) -> tuple[set[str], list[str]]:
    """Forget (without `lock`: only list) the snapshots of `job` that `policy` does not keep."""
    snapshots = repo.snapshots(job)
    keep = snapshots_to_keep([(s.id, s.created_at) for s in snapshots], policy)
    forgotten = [s.id for s in snapshots if s.id not in keep]
    if lock is not None:
        for snapshot_id in forgotten:
            lock.ensure_held()
            repo.delete_snapshot(snapshot_id)
    return keep, forgotten


def prune_repository(
    repo: Repository, policies: Mapping[str, Retention], *, dry_run: bool = False, grace_seconds: float = GRACE_SECONDS
) -> dict[str, Any]:
    """Maintenance (`davit repository prune`): apply each job's policy, then delete what no
    snapshot references, under one exclusive lock. `dry_run`: only say what would go (under a
    shared lock: nothing is deleted). `DeletesDenied` first if the credential may not delete."""
    if dry_run:
        with repo.locked(exclusive=False):
            jobs = {job: _forget(repo, None, job, policy) for job, policy in sorted(policies.items())}
            forgotten = {sid for _, gone in jobs.values() for sid in gone}
            packs = unreferenced_packs(repo, referenced_chunks(repo, forgotten))
        return {
            "jobs": {job: {"kept": sorted(keep), "forgotten": gone} for job, (keep, gone) in jobs.items()},
            "packs_deleted": len(packs),
            "dry_run": True,
        }
    require_delete(repo, "prune")
    with _deleting(repo), repo.locked(exclusive=True) as lock:
        jobs = {job: _forget(repo, lock, job, policy) for job, policy in sorted(policies.items())}
        pruned = prune(repo, grace_seconds)
    return {"jobs": {job: {"kept": sorted(keep), "forgotten": gone} for job, (keep, gone) in jobs.items()}, **pruned}


def unreferenced_packs(repo: Repository, refs: set[bytes]) -> list[str]:
    """The packs none of whose chunks is in `refs`."""
    found = []
    for pack in repo.index_packs():
        entries = repo.read_index(pack)
        if entries is not None and not any(cid in refs for cid, _ in entries):
            found.append(pack)
    return found


def referenced_chunks(
    repo: Repository, leaving_out: set[str] | frozenset[str] = frozenset(), grace_seconds: float = GRACE_SECONDS
) -> set[bytes]:
    """Chunks named by any snapshot's tree (also one whose manifest is damaged, as far as its
    tree still reads) or any in-progress backup's staging tree: this host's staged trees and,
    in a remote repository, the staging segments every host uploaded (`segments.py`; those of a
    run marked ended more than `grace_seconds` ago protect nothing); `leaving_out` snapshots
    aside (a dry run's would-be forgotten).

    Call it under the exclusive lock (as `prune` does): otherwise a publish between reading the
    snapshots and listing the staging trees hides that snapshot's chunks from both."""
    refs: set[bytes] = set()
    for snap in repo.snapshots():
        if snap.id in leaving_out:
            continue
        for entry in read_lines(repo.open_tree(snap)):
            refs.update(bytes.fromhex(c) for c in entry.chunks)
    for damaged in repo.damaged_snapshots():
        refs.update(_chunks_of_damaged(repo, damaged))
    for staged in repo.staged_trees():
        try:
            fh = open_regular(staged)
        except FileNotFoundError:
            # davitd removes an ended run's staging without a lock: its snapshot was published
            # before this prune listed the snapshots, or will never be.
            continue
        except (NotRegularFile, OSError) as exc:  # a FIFO or symlink: no staging davit wrote
            log.warning("prune passes over %s: %s", staged, exc)
            continue
        with fh:
            try:
                for entry in read_lines(fh):
                    refs.update(bytes.fromhex(c) for c in entry.chunks)
            except ValueError:
                continue  # a torn last line past the run's checkpoint; the run truncates it
    refs |= repo.staged_segment_chunks(grace_seconds)
    return refs


def _chunks_of_damaged(repo: Repository, damaged: DamagedSnapshot) -> set[bytes]:
    """The chunks a damaged snapshot's tree names, up to its first line that does not read."""
    found: set[bytes] = set()
    try:
        with repo.open_damaged_tree(damaged) as lines:
            for entry in read_lines(lines):
                found.update(bytes.fromhex(c) for c in entry.chunks)
    except Exception:  # best effort by design: whatever the damage, keep what was read
        pass
    return found


def prune(repo: Repository, grace_seconds: float = GRACE_SECONDS) -> dict[str, int]:
    """Delete what no snapshot and no staged backup references, under the exclusive lock.
    `DeletesDenied` if the credential may not delete."""
    require_delete(repo, "prune")
    with _deleting(repo), repo.locked(exclusive=True) as lock:
        refs = referenced_chunks(repo, grace_seconds=grace_seconds)
        deleted = rewritten = freed = 0
        for pack in repo.index_packs():
            entries = repo.read_index(pack)
            if entries is None:
                continue
            live = [(cid, ref) for cid, ref in entries if cid in refs]
            total = sum(ref.stored_len for _, ref in entries)
            unused = total - sum(ref.stored_len for _, ref in live)
            if not live:
                lock.ensure_held()
                repo.delete_pack(pack)
                deleted += 1
                freed += total
            elif unused / max(total, 1) > REPACK_WHEN_UNUSED_ABOVE:
                writer = repo.new_pack()
                for cid, ref in live:
                    writer.add(cid, repo.read_blob(ref), ref.plain_len, ref.codec)
                repo.seal_pack(writer)
                lock.ensure_held()
                repo.delete_pack(pack)
                rewritten += 1
                freed += unused
        leftovers = _remove_leftovers(repo, lock, grace_seconds)
        freed += leftovers.pop("_bytes")
        repo.reload_index()
    return {"packs_deleted": deleted, "packs_rewritten": rewritten, "bytes_freed": freed, **leftovers}


def _remove_leftovers(repo: Repository, lock: HeldLock, grace_seconds: float) -> dict[str, int]:
    """Temporary objects and index-less packs older than the grace period (by mtime)."""
    cutoff = time.time() - grace_seconds
    backend = repo.backend
    old_tmp = [o for o in backend.list("tmp/") if o.mtime < cutoff]
    indexed = set(repo.index_packs())
    orphans = [o for o in backend.list("packs/") if o.mtime < cutoff and _pack_of(o.key) not in {None, *indexed}]
    freed = 0
    for obj in old_tmp:
        lock.ensure_held()
        backend.delete(obj.key)
        freed += obj.size
    for obj in orphans:
        lock.ensure_held()
        backend.delete(obj.key)
        freed += obj.size
    ended = repo.remove_ended_segments(grace_seconds, lock.ensure_held)
    return {"tmp_removed": len(old_tmp), "orphan_packs_removed": len(orphans), "ended_stagings_removed": ended, "_bytes": freed}


def _pack_of(key: str) -> str | None:
    """The pack id of a `packs/<xx>/<id>.pack` key; None for anything else (left alone)."""
    parts = key.split("/")
    if len(parts) != 3 or not parts[2].endswith(".pack"):
        return None
    pack = parts[2][: -len(".pack")]
    return pack if PACK_ID.fullmatch(pack) and parts[1] == pack[:2] else None

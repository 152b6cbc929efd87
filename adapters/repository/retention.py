"""Retention and pruning: forget snapshots a policy does not keep, then delete the packs no
kept snapshot and no backup in progress still references.

A pack is deleted only when none of its chunks is referenced; a pack mostly unreferenced is
first rewritten with its live chunks (copied as stored, never recompressed) into a new pack
that is sealed before the old one goes. Pruning holds the repository lock exclusively, so no
backup can pick a chunk as "already stored" while its pack is being removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from adapters.files.tree import read_lines
from adapters.repository.packs import decode_index, index_path, pack_path
from adapters.repository.repository import Repository
from domain.jobs import Retention
from domain.retention import snapshots_to_keep

REPACK_WHEN_UNUSED_ABOVE = 0.5


def apply_retention(repo: Repository, job: str, policy: Retention) -> dict[str, Any]:
    with repo.locked(exclusive=True):
        snapshots = repo.snapshots(job)
        keep = snapshots_to_keep([(s.id, s.created_at) for s in snapshots], policy)
        forgotten = [s for s in snapshots if s.id not in keep]
        for snap in forgotten:
            _remove_snapshot(repo, snap.path)
        pruned = prune(repo) if forgotten else {"packs_deleted": 0, "packs_rewritten": 0, "bytes_freed": 0}
    return {"kept": sorted(keep), "forgotten": [s.id for s in forgotten], **pruned}


def referenced_chunks(repo: Repository) -> set[bytes]:
    """Chunks named by any snapshot's tree or any in-progress backup's staging tree."""
    refs: set[bytes] = set()
    for snap in repo.snapshots():
        for entry in read_lines(repo.open_tree(snap)):
            refs.update(bytes.fromhex(c) for c in entry.chunks)
    for staged in (repo.root / "staging").glob("*/tree.jsonl"):
        with open(staged, "rb") as fh:
            try:
                for entry in read_lines(fh):
                    refs.update(bytes.fromhex(c) for c in entry.chunks)
            except ValueError:
                continue  # a torn last line past the run's checkpoint; the run truncates it
    return refs


def prune(repo: Repository) -> dict[str, int]:
    refs = referenced_chunks(repo)
    deleted = rewritten = freed = 0
    for idx in sorted((repo.root / "index").glob("*.idx")):
        pack = idx.stem
        entries = decode_index(pack, idx.read_bytes(), idx)
        live = [(cid, ref) for cid, ref in entries if cid in refs]
        total = sum(ref.stored_len for _, ref in entries)
        unused = total - sum(ref.stored_len for _, ref in live)
        if not live:
            _delete_pack(repo, pack)
            deleted += 1
            freed += total
        elif unused / max(total, 1) > REPACK_WHEN_UNUSED_ABOVE:
            writer = repo.new_pack()
            for cid, ref in live:
                writer.add(cid, repo.read_blob(ref), ref.plain_len, ref.codec)
            repo.seal_pack(writer)
            _delete_pack(repo, pack)
            rewritten += 1
            freed += unused
    repo.reload_index()
    return {"packs_deleted": deleted, "packs_rewritten": rewritten, "bytes_freed": freed}


def _delete_pack(repo: Repository, pack: str) -> None:
    # The index goes first: a pack without an index is invisible garbage, never a dangling entry.
    index_path(repo.root, pack).unlink(missing_ok=True)
    repo.forget_pack(pack)
    pack_path(repo.root, pack).unlink(missing_ok=True)


def _remove_snapshot(repo: Repository, path: Path) -> None:
    # The manifest goes first, so a half-removed snapshot no longer exists rather than being torn.
    (path / "manifest.json").unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)

"""repository.copy: snapshots of repository SRC copied into the job's repository (DST), resumable.

`prepare` chooses the snapshots: those of SRC (of the job's `jobs`, or the one `snapshot`)
that DST has no snapshot of the same id for, oldest first, and not those DST's `retention`
would forget at once (else each run would copy them again only to forget them). It records
them; the plan is one step `copy:<id>` per snapshot, then `retention` if the job has a policy.

A `copy:<id>` step holds a shared lock on both repositories while it stores. It reads SRC's
tree a line at a time, sends each chunk the line names that DST lacks into a pack of DST's own
(`chunks.py`), and appends the line (its chunk ids renamed when the keys differ, `lines.py`) to
a staging tree of this run on DST, which protects the chunks from a prune there as a backup's
staging does. At every checkpoint the pack is sealed, the staging tree fsynced, and only then
the cursor (lines done, staging length) recorded: a run killed at any instant resumes after
its last checkpoint, and the chunks of packs sealed before are in DST's index, so they are not
sent again. Last, the snapshot is published on DST under its SRC id with SRC's manifest fields
and `copied_from`; a step that finds the id already on DST (a publish a kill cut off before
the step was recorded, or another copy) skips it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any, BinaryIO

from davit.adapters.copy.chunks import ChunkMover, same_key_material
from davit.adapters.copy.lines import chunk_ids, refuse_unrewritable, renamed
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.adapters.repository.staging import Staging
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import RETENTION, Step, retention_unless_denied, run_steps, step_names
from davit.domain.errors import SnapshotNotFound
from davit.domain.jobs import RepositoryCopyJob
from davit.domain.ports import RunContext
from davit.domain.retention import snapshots_to_keep

COPY = "copy:"


class RepositoryCopyWork(RunWork[RepositoryCopyJob]):
    def __init__(self, inputs: RunInputs[RepositoryCopyJob]) -> None:
        super().__init__(inputs)
        self._selected: list[str] | None = None
        self._src: Repository | None = None

    @property
    def src(self) -> Repository:
        if self._src is None:
            self._src = self.inputs.repository(self.spec.source_repository)
        return self._src

    # --- plan ------------------------------------------------------------------------------------

    def _snapshot_ids(self) -> list[str]:
        if self._selected is not None:
            return self._selected
        return list(self.details.get("snapshots") or [])

    def _jobs(self) -> list[str]:
        return list(self.details.get("jobs") or self.spec.jobs)

    def steps(self) -> list[Step]:
        steps = [self._copy_step(index, sid) for index, sid in enumerate(self._snapshot_ids())]
        if not self.spec.retention.is_empty():
            steps.append(Step(RETENTION, self._retention))
        return steps

    def _copy_step(self, index: int, sid: str) -> Step:
        return Step(COPY + sid, lambda ctx: self._copy(ctx, index, sid))

    def plan(self) -> list[str]:
        return step_names(self.steps())

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        chosen = self._choose()
        same = same_key_material(self.src, self.repo)
        if not same:
            for snap in chosen:
                refuse_unrewritable(snap.id, snap.kind, self.spec.source_repository)
        self._selected = [s.id for s in chosen]
        jobs = sorted(set(self.spec.jobs) | {s.job for s in chosen})
        self.details = {**self.details, "snapshots": self._selected, "jobs": jobs}
        return {
            "source_repository": self.spec.source_repository,
            "snapshots": self._selected,
            "jobs": jobs,
            "same_keys": same,
        }

    def _choose(self) -> list[SnapshotInfo]:
        """SRC's snapshots to copy, oldest first (see the module's docstring)."""
        if self.spec.snapshot is not None:
            one = self.src.resolve(self.spec.snapshot)
            if self.spec.jobs and one.job not in self.spec.jobs:
                raise SnapshotNotFound(f"{self.spec.snapshot} among the snapshots of {', '.join(self.spec.jobs)}")
            wanted = [one]
        else:
            wanted = [s for s in self.src.snapshots() if not self.spec.jobs or s.job in self.spec.jobs]
        candidates = [s for s in wanted if not self.repo.snapshot_exists(s.id)]
        if self.spec.retention.is_empty():
            return candidates
        kept: set[str] = set()
        for job in {s.job for s in candidates}:
            there = [(s.id, s.created_at) for s in self.repo.snapshots(job)]
            kept |= snapshots_to_keep(there + [(s.id, s.created_at) for s in candidates if s.job == job], self.spec.retention)
        return [s for s in candidates if s.id in kept]

    def run(self, ctx: RunContext) -> None:
        run_steps(ctx, self.steps(), stop_between=True)

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Every snapshot copied is on DST with every chunk its tree names (a prune on DST after
        the publish, by anyone, is checked against too)."""
        copied = [sid for sid in self._snapshot_ids() if self.repo.snapshot_exists(sid)]
        for sid in copied:
            info = self.repo.resolve(sid)
            self.repo.refuse_missing(sid, self.repo.missing_chunks(_tree_chunks(self.repo, info)))
        return {
            "snapshot_id": copied[-1] if copied else None,
            "copied": copied,
            "source_repository": self.spec.source_repository,
        }

    # --- copy one snapshot -----------------------------------------------------------------------

    def _copy(self, ctx: RunContext, index: int, sid: str) -> dict[str, Any]:
        staging = self.repo.staging(self.run_id, part=index)
        if self.repo.snapshot_exists(sid):
            staging.remove()  # published before a kill cut the step short, or copied by another run
            return {"snapshot_id": sid, "already_there": True}
        info = self.src.resolve(sid)
        if info.id != sid:
            raise SnapshotNotFound(sid)
        same = same_key_material(self.src, self.repo)
        if not same:
            refuse_unrewritable(sid, info.kind, self.spec.source_repository)
        step = COPY + sid
        cursor = ctx.cursor(step) or {}
        mover = ChunkMover(self.src, self.repo, same, self.tuning, self.spec.source_repository)
        with (
            self.src.locked(exclusive=False),
            self.repo.locked(exclusive=False),
            staging.reopen_tree(cursor.get("tree_bytes", 0)) as tree,
            closing(self.src.open_tree(info)) as lines,
        ):
            try:
                _Copier(ctx, step, mover, tree, cursor, sid, self.spec.source_repository, staging).copy(lines, same)
            except BaseException:
                mover.abort()
                raise
        return self._publish(info, staging.tree, cursor_of(ctx, step))

    def _publish(self, info: SnapshotInfo, staged: Any, cursor: dict[str, Any]) -> dict[str, Any]:
        with self.repo.locked(exclusive=False):  # held through the publish (re-entrant)
            with open(staged, "rb") as fh:
                # DST as it is now: should this run's lock have been taken over while it stored,
                # a prune may have deleted chunks the staged tree names (Repository.publish_snapshot)
                self.repo.refuse_missing(info.id, self.repo.missing_chunks(_staged_chunks(fh)))
            parent = info.parent if info.parent and self.repo.snapshot_exists(info.parent) else None
            manifest = {
                "id": info.id,
                "job": info.job,
                "kind": info.kind,
                "run_id": info.run_id,
                "created_at": info.created_at,
                "source": info.source,
                "parent": parent,
                "stats": info.stats,
                "copied_from": self.spec.source_repository,
            }
            with open(staged, "rb") as fh:
                self.repo.publish_snapshot_from(manifest, fh)
        self.repo.staging(self.run_id, part=self._snapshot_ids().index(info.id)).remove()
        return {
            "snapshot_id": info.id,
            "job": info.job,
            "lines": cursor.get("lines", 0),
            "chunks_sent": cursor.get("chunks_sent", 0),
            "bytes_sent": cursor.get("bytes_sent", 0),
        }

    def _retention(self, ctx: RunContext) -> dict[str, Any]:
        """DST's policy for each job copied; SRC keeps to its own jobs' policies."""
        return retention_unless_denied(ctx, self.repo, self.spec.repository, self._jobs(), self.spec.retention)


class _Copier:
    """One `copy:<id>` step's store loop: tree lines in, chunks sent, staged lines out, checkpoints."""

    def __init__(
        self,
        ctx: RunContext,
        step: str,
        mover: ChunkMover,
        tree: BinaryIO,
        cursor: dict[str, Any],
        sid: str,
        source: str,
        staging: Staging,
    ) -> None:
        self.ctx, self.step, self.mover, self.tree = ctx, step, mover, tree
        self.staging = staging
        self.sid, self.source = sid, source
        self.lines_done = cursor.get("lines", 0)
        self.chunks_before = cursor.get("chunks_sent", 0)
        self.bytes_before = cursor.get("bytes_sent", 0)
        self.last_checkpoint = time.monotonic()
        # The lines the last recorded checkpoint covers (None: none recorded yet), so the step's
        # closing checkpoint is not recorded again when nothing moved since: after a resume at the
        # tree's end, or when the last line's pack or clock already made one.
        self.lines_recorded: int | None = cursor.get("lines") if cursor else None

    def copy(self, lines: BinaryIO, same_keys: bool) -> None:
        skip = self.lines_done
        for number, line in enumerate(lines):
            if number < skip:
                continue  # staged before the last checkpoint
            entry, ids = chunk_ids(line, self.sid, self.source)
            if entry is not None:
                if same_keys:
                    for cid in ids:
                        self.mover.rename(cid)
                    self.tree.write(line if line.endswith(b"\n") else line + b"\n")
                else:
                    self.tree.write(renamed(entry, ids, self.mover.rename))
            self.lines_done = number + 1
            if self.mover.pack_full() or time.monotonic() - self.last_checkpoint >= self.mover.tuning.checkpoint_seconds:
                self.checkpoint()
                self.ctx.check_stop()
        if self.lines_done != self.lines_recorded:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Pack sealed, staging tree durable, then the cursor: the order a resume relies on."""
        written = self.mover.seal()
        tree_bytes = self.staging.durable(self.tree)
        chunks = self.chunks_before + self.mover.chunks_sent
        sent = self.bytes_before + self.mover.bytes_sent
        self.ctx.checkpoint(
            self.step,
            {"lines": self.lines_done, "tree_bytes": tree_bytes, "chunks_sent": chunks, "bytes_sent": sent},
            chunks_written=written,
            bytes_stored=sent,
            items_done=self.lines_done,
        )
        self.lines_recorded = self.lines_done
        self.last_checkpoint = time.monotonic()


def cursor_of(ctx: RunContext, step: str) -> dict[str, Any]:
    return ctx.cursor(step) or {}


def _staged_chunks(fh: BinaryIO) -> Iterator[bytes]:
    for line in fh:
        _entry, ids = chunk_ids(line, "(staged)", "(this run's staging)")
        for cid in ids:
            yield bytes.fromhex(cid)


def _tree_chunks(repo: Repository, info: SnapshotInfo) -> Iterator[bytes]:
    with closing(repo.open_tree(info)) as lines:
        for line in lines:
            _entry, ids = chunk_ids(line, info.id, "(destination)")
            for cid in ids:
                yield bytes.fromhex(cid)

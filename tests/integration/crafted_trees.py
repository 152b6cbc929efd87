"""Hand-written snapshots for restore tests: a tree published through the Repository API as an
attacker with write access to a plain repository could, and fingerprints of what lies outside
a restore target."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

from davit.adapters.files.restore import FilesRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import FilesRestoreJob
from tests.fakes import MemoryRunContext

SMALL = Tuning(chunk_size=64 << 10, pack_size=256 << 10, checkpoint_seconds=60, inflight_chunks=4)
ROOT = {"p": ".", "t": "d", "m": 0o755, "mt": 1_600_000_000_000_000_000}


def store_chunk(repo: Repository, data: bytes) -> str:
    """Store `data` as one chunk in its own pack; its id, as a tree line names it."""
    cid, stored, codec = repo.encode(data)
    if stored is not None:
        pack = repo.new_pack()
        pack.add(cid, stored, len(data), codec)
        repo.seal_pack(pack)
    return cid.hex()


def file_line(repo: Repository, path: str, data: bytes, mode: int = 0o644, **extra: Any) -> dict[str, Any]:
    return {
        "p": path,
        "t": "f",
        "m": mode,
        "mt": 1_600_000_000_000_000_000,
        "s": len(data),
        "c": [store_chunk(repo, data)] if data else [],
        **extra,
    }


def publish(
    repo: Repository, snapshot_id: str, lines: list[dict[str, Any] | bytes], job: str = "job", kind: str = "files"
) -> str:
    """Publish `lines` (dicts, or raw bytes for lines that are not even JSON) as a snapshot of
    `kind` (a files one, or a volumes one: the same tree format)."""
    raw = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    manifest = {"id": snapshot_id, "job": job, "kind": kind, "run_id": snapshot_id, "created_at": "2026-01-01T00:00:00"}
    repo.publish_snapshot_from(manifest, io.BytesIO(raw))
    return snapshot_id


def restore_work(
    repo: Repository, target: Path, snapshot: str, overwrite: bool = False, job: str = "job"
) -> tuple[FilesRestoreWork, MemoryRunContext]:
    spec = FilesRestoreJob(
        name="r",
        kind="files.restore",
        source={"job": job, "snapshot": snapshot},
        target={"path": str(target), "overwrite": overwrite},
    )
    return FilesRestoreWork(RunInputs(spec, "restore1", SMALL, repo=repo)), MemoryRunContext(run_id="restore1")


def run_restore(repo: Repository, target: Path, snapshot: str, overwrite: bool = False) -> MemoryRunContext:
    work, ctx = restore_work(repo, target, snapshot, overwrite)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def fingerprint(root: Path, leave_out: tuple[Path, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Everything under `root` (not following symlinks) but the trees in `leave_out`: type,
    mode, owner, mtime, link count, and content hash or link target."""
    out: dict[str, tuple[object, ...]] = {}
    skipped = {str(p) for p in leave_out}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skipped]
        for name in [*dirnames, *filenames, "."]:
            path = os.path.join(dirpath, name)
            if path in skipped:
                continue
            st = os.lstat(path)
            what: object = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    what = hashlib.sha256(fh.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_mtime_ns, what)
    return out


def make_outside(root: Path) -> Path:
    """A directory a restore must never touch: a secret file, a subdirectory, a setuid-less
    program, each with its own mode."""
    outside = root / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_text("outside secret")
    os.chmod(outside / "secret", 0o600)
    (outside / "dir" / "program").write_text("#!/bin/sh\n")
    os.chmod(outside / "dir" / "program", 0o755)
    os.chmod(outside / "dir", 0o750)
    return outside

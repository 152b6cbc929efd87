"""`davit repository check`: is everything the snapshots need stored, whole, where it belongs?

Structure (always): every object under `index/` is named `<pack>.idx`, decodes, and names a
pack that exists and is long enough for every blob the index places in it; every snapshot's
manifest loads (damaged ones are problems) and every chunk its tree names is in a pack that
passed. With `read_data`, every blob of every pack (or of the packs a `Subset` selects) is read
and re-hashed by `Repository.read_chunk`, which also opens and authenticates sealed chunks.

It works on the storage port (`repo.backend`) and the repository's public methods only, so it
checks a remote repository the same way (on a remote, one HEAD per pack). It holds a shared
lock: no prune deletes anything under it. Snapshots are listed *before* the indexes: a backup
publishing meanwhile wrote its packs and indexes before its manifest, so a snapshot listed
has its indexes listed too and is never reported short of chunks it has.

A pack without an index is not a problem: a backup killed between the two leaves one, and
prune removes it after its grace period; it is counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge
from davit.adapters.repository.packs import MAX_INDEX_BYTES, BlobRef, decode_index
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.domain.errors import CorruptChunk

PACK_ID = re.compile(r"^[0-9a-f]{32}$")
EXAMPLES = 5  # problems of one pack or snapshot spelled out; the rest are counted

Entries = list[tuple[bytes, BlobRef]]


def pack_key(pack: str) -> str:
    return f"packs/{pack[:2]}/{pack}.pack"


def index_key(pack: str) -> str:
    return f"index/{pack}.idx"


@dataclass(frozen=True)
class Subset:
    """Part `n` of `m` of the packs, chosen by pack id (like restic's `--read-data-subset n/m`):
    the same packs every time, and `1/m` ... `m/m` together read every pack once."""

    n: int
    m: int

    @classmethod
    def parse(cls, text: str) -> Subset:
        n, slash, m = text.partition("/")
        if not slash or not n.isdigit() or not m.isdigit() or not 1 <= int(n) <= int(m):
            raise ValueError(f"{text!r} is not a subset: give n/m with 1 <= n <= m, e.g. 1/10")
        return cls(int(n), int(m))

    def selects(self, pack: str) -> bool:
        return int(pack[:8], 16) % self.m == self.n - 1


@dataclass
class CheckReport:
    indexes: int = 0
    packs: int = 0  # packs an index names that are present and long enough
    unindexed_packs: int = 0
    snapshots: int = 0
    damaged_snapshots: int = 0
    chunks_referenced: int = 0
    packs_read: int = 0
    chunks_read: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items()}, "ok": self.ok}


def check_repository(repo: Repository, read_data: bool = False, subset: Subset | None = None) -> CheckReport:
    """Check `repo` (see the module docstring); the problems are in the report, never raised.
    `read_data` (implied by `subset`) reads the chunks back. An encrypted repository opened
    without its key raises `RepositoryKeyError`: its trees cannot be read to be checked."""
    report = CheckReport()
    with repo.locked(exclusive=False):
        snapshots = repo.snapshots()
        for damaged in repo.damaged_snapshots():
            report.damaged_snapshots += 1
            report.problems.append(f"snapshot {damaged.id} is damaged: {damaged.reason}")
        listed: set[str] = set()
        indexes = _check_indexes(repo.backend, report, listed)
        report.unindexed_packs = _unindexed_packs(repo.backend, listed, report)
        present = {cid for entries in indexes.values() for cid, _ in entries}
        for snap in snapshots:
            report.snapshots += 1
            _check_snapshot(repo, snap, present, report)
        if read_data or subset is not None:
            for pack in sorted(indexes):
                if subset is None or subset.selects(pack):
                    _read_pack(repo, pack, indexes[pack], report)
    return report


def _check_indexes(backend: Backend, report: CheckReport, listed: set[str]) -> dict[str, Entries]:
    """The indexes that decode and whose pack is whole, by pack id; every pack an index is
    listed for goes into `listed`."""
    found: dict[str, Entries] = {}
    for info in backend.list("index/"):
        pack = info.key.removeprefix("index/").removesuffix(".idx")
        if info.key != index_key(pack) or not PACK_ID.match(pack):
            report.problems.append(f"{info.key}: not an index davit wrote (the name is not index/<pack id>.idx)")
            continue
        report.indexes += 1
        listed.add(pack)
        try:
            entries = decode_index(pack, backend.get(info.key, max_bytes=MAX_INDEX_BYTES), info.key)
        except ObjectMissing:
            report.problems.append(f"{info.key}: listed, then missing when read")
            continue
        except (ObjectTooLarge, CorruptChunk) as exc:
            report.problems.append(f"{info.key}: {exc}")
            continue
        problem = _pack_problem(backend, pack, entries)
        if problem:
            report.problems.append(problem)
            continue
        report.packs += 1
        found[pack] = entries
    return found


def _pack_problem(backend: Backend, pack: str, entries: Entries) -> str | None:
    stat = backend.stat(pack_key(pack))
    if stat is None:
        return f"{index_key(pack)} names pack {pack}, which is missing ({len(entries)} chunks lost)"
    needed = max((ref.offset + ref.stored_len for _, ref in entries), default=0)
    if stat.size < needed:
        return f"pack {pack} is {stat.size} bytes, but its index places chunks up to byte {needed}"
    return None


def _unindexed_packs(backend: Backend, indexed: set[str], report: CheckReport) -> int:
    count = 0
    for info in backend.list("packs/"):
        pack = info.key.rpartition("/")[2].removesuffix(".pack")
        if info.key != pack_key(pack) or not PACK_ID.match(pack):
            report.problems.append(f"{info.key}: not a pack davit wrote (the name is not packs/<xx>/<pack id>.pack)")
        elif pack not in indexed:
            count += 1
    return count


def _check_snapshot(repo: Repository, snap: SnapshotInfo, present: set[bytes], report: CheckReport) -> None:
    missing: list[str] = []
    try:
        with repo.open_tree(snap) as lines:
            for line in lines:
                if not line.strip():
                    continue
                entry = json.loads(line)
                for chunk in entry.get("c") or ():
                    report.chunks_referenced += 1
                    if bytes.fromhex(chunk) not in present:
                        missing.append(f"{entry.get('p', '?')}: chunk {chunk}")
    except CorruptChunk as exc:
        report.problems.append(f"snapshot {snap.id}: its tree cannot be read: {exc}")
        return
    except (ValueError, AttributeError, TypeError, RecursionError) as exc:  # a tree line davit did not write
        report.problems.append(f"snapshot {snap.id}: its tree holds a malformed line: {exc}")
        return
    if missing:
        more = f" (and {len(missing) - EXAMPLES} more)" if len(missing) > EXAMPLES else ""
        report.problems.append(
            f"snapshot {snap.id} (job {snap.job}): {len(missing)} chunks it needs are not in any intact pack: "
            f"{'; '.join(missing[:EXAMPLES])}{more}"
        )


def _read_pack(repo: Repository, pack: str, entries: Entries, report: CheckReport) -> None:
    report.packs_read += 1
    bad: list[str] = []
    for cid, ref in entries:
        try:
            repo.read_chunk(cid, ref)
            report.chunks_read += 1
        except CorruptChunk as exc:
            bad.append(str(exc))
    if bad:
        more = f" (and {len(bad) - EXAMPLES} more)" if len(bad) > EXAMPLES else ""
        report.problems.append(f"pack {pack}: {len(bad)} chunks do not verify: {'; '.join(bad[:EXAMPLES])}{more}")

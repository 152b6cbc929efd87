"""What a files (or volume) backup's `store` step, or a files restore, amounts to, for its
progress: bytes and entries.

Taken from the parent snapshot's manifest when there is one (no I/O beyond what the run read
already: a tree changes little between backups, and the figure is an estimate anyway), else from
a scan: the same confined walk the store does (no symlink followed), run in a thread beside the
store so the backup does not wait for it; its total is told once the walk ends, and the scan
stops with the run. Only entries are counted; no file is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from davit.adapters.files.tree import Skipped
from davit.adapters.repository.treeformat import FILE
from davit.domain.ports import RunContext
from davit.domain.progress import plausible


def snapshot_totals(stats: dict[str, Any]) -> tuple[int, int] | None:
    """(bytes, entries) of a snapshot as its manifest's `stats` count them (a backup's parent:
    an estimate; a restore's snapshot: exact); None if it does not."""
    try:
        items = sum(int(stats.get(k, 0)) for k in ("files", "dirs", "links", "specials"))
        size = int(stats["bytes"])
    except (KeyError, TypeError, ValueError, OverflowError):  # (OverflowError: `Infinity`, which json reads)
        return None
    # a figure no snapshot could have (a hostile manifest's) is no estimate: the log never gets it
    if plausible(size) is None or plausible(items) is None:
        return None
    return size, items


class TreeScan:
    """Counts a walk's entries and file bytes in a daemon thread, then tells the step's total."""

    def __init__(self, ctx: RunContext, step: str, walk: Callable[[], Iterator[Any]]) -> None:
        self._ctx, self._step, self._walk = ctx, step, walk
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, name="davit-scan", daemon=True)

    def __enter__(self) -> TreeScan:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # the store is done (or stopped): a total it can no longer use is not waited for
        self._stop.set()
        self._thread.join()

    def wait(self) -> None:
        """Until the scan has told its total (or failed)."""
        self._thread.join()

    def _scan(self) -> None:
        size = items = 0
        walk = self._walk()
        try:
            for item in walk:
                if self._stop.is_set():
                    return
                if isinstance(item, Skipped):
                    continue
                entry = item[0]
                items += 1
                size += entry.size if entry.type == FILE else 0
        except Exception:  # a scan that fails leaves the total unknown; the store reports the tree's problems
            return
        finally:
            close = getattr(walk, "close", None)
            if close is not None:
                close()
        self._ctx.step_total(self._step, bytes_total=size, items_total=items)

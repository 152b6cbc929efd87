"""What a first volume backup's `store` step, or a volume restore, amounts to, for its progress.

A first backup (no parent snapshot to take figures from) whose volumes are read through their
mountpoints counts them with the files scan (`files/totals.py`). Through a helper container a
second walk would mean a second container streaming every volume, so the engine is asked
instead: its volume sizes (`docker system df -v`, the `/system/df?type=volume` call), which it
measures by walking the volume directories itself. That is bytes only (no entry count), taken
before excludes, hard links once: an estimate, like every total. The call can take a while on
an engine with many volumes, so it runs in a thread beside the store, on a client of its own,
and a store that ends first does not wait for it.

A restore counts the chosen volume's entries in the snapshot while `prepare` checks them (the
snapshot's own `stats` cover every volume it holds, not the one restored).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from davit.adapters.docker.engine import connect
from davit.adapters.repository.treeformat import Entry
from davit.domain.ports import RunContext
from davit.domain.progress import plausible


def entry_totals(entries: Iterable[Entry]) -> tuple[int, int]:
    """(bytes, entries) of a run of entries, counted as the restore step counts what it did."""
    size = items = 0
    for entry in entries:
        items += 1
        size += entry.size
    return size, items


def volume_sizes(df: dict[str, Any], names: Iterable[str]) -> int | None:
    """The summed sizes of volumes `names` in an engine's `/system/df` answer; None unless the
    engine measured every one of them (it reports -1 for a size it did not compute)."""
    sizes: dict[str, int] = {}
    for volume in df.get("Volumes") or []:
        if not isinstance(volume, dict):
            continue
        size = (volume.get("UsageData") or {}).get("Size")
        if isinstance(volume.get("Name"), str) and isinstance(size, int) and not isinstance(size, bool):
            sizes[volume["Name"]] = size
    wanted = list(names)
    if not all(plausible(sizes.get(name)) is not None for name in wanted):
        return None
    return plausible(sum(sizes[name] for name in wanted))


class EngineVolumeSizes:
    """Asks the engine for the volumes' sizes in a daemon thread, then tells the step's total."""

    def __init__(self, ctx: RunContext, step: str, engine: str | None, names: list[str]) -> None:
        self._ctx, self._step, self._engine, self._names = ctx, step, engine, names
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, name="davit-volume-sizes", daemon=True)

    def __enter__(self) -> EngineVolumeSizes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # The store is done (or stopped): not waited for (the engine's walk cannot be cut short);
        # a figure that comes later is dropped.
        self._stop.set()

    def wait(self) -> None:
        """Until the engine answered (or the question failed)."""
        self._thread.join()

    def _ask(self) -> None:
        try:
            client = connect(self._engine)
        except Exception:  # an engine that cannot be asked leaves the total unknown; the store reports it
            return
        try:
            api = client.api
            df = api._result(api._get(api._url("/system/df"), params={"type": "volume"}), True)
        except Exception:  # (an engine too old for sizes, or gone): unknown
            return
        finally:
            client.close()
        size = volume_sizes(df if isinstance(df, dict) else {}, self._names)
        if size is not None and not self._stop.is_set():
            self._ctx.step_total(self._step, bytes_total=size)

"""Fakes for tests that drive adapters without a daemon: a RunContext recording in memory."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from davit.domain.errors import RunStopped


@dataclass
class MemoryRunContext:
    """Keeps cursors and step states like the executor's fold would; can stop after N checkpoints."""

    run_id: str = "run1"
    stop_after_checkpoints: int | None = None
    cursors: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks_written: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    totals: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)

    def cursor(self, step: str) -> dict[str, Any] | None:
        return self.cursors.get(step)

    def step_done(self, step: str) -> bool:
        return step in self.done

    def step_started(self, step: str, *, commits: bool = False) -> None:
        pass

    def checkpoint(
        self,
        step: str,
        cursor: dict[str, Any],
        *,
        chunks_written: Sequence[str] = (),
        bytes_done: int = 0,
        bytes_stored: int = 0,
        items_done: int = 0,
    ) -> None:
        self.cursors[step] = cursor
        self.chunks_written.extend(chunks_written)
        self.checkpoints.append({"step": step, "cursor": cursor, "chunks": list(chunks_written)})
        if self.stop_after_checkpoints is not None and len(self.checkpoints) >= self.stop_after_checkpoints:
            self.stop.set()

    def step_total(self, step: str, *, bytes_total: int | None = None, items_total: int | None = None) -> None:
        self.totals[step] = (bytes_total, items_total)

    def step_completed(self, step: str, summary: dict[str, Any]) -> None:
        self.done.add(step)

    def step_handover(self, done: str, summary: dict[str, Any], next_step: str, *, commits: bool = False) -> None:
        self.step_completed(done, summary)
        self.step_started(next_step, commits=commits)

    def warn(self, message: str, step: str | None = None) -> None:
        self.warnings.append(message)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise RunStopped("test asked to stop")


@dataclass
class ProgressRunContext(MemoryRunContext):
    """A `MemoryRunContext` that also keeps, per checkpoint, the amounts done and the step's
    totals as the daemon's `WorkerContext` sends them along (the last `step_total` told)."""

    progress: list[dict[str, Any]] = field(default_factory=list)

    def checkpoint(
        self,
        step: str,
        cursor: dict[str, Any],
        *,
        chunks_written: Sequence[str] = (),
        bytes_done: int = 0,
        bytes_stored: int = 0,
        items_done: int = 0,
    ) -> None:
        bytes_total, items_total = self.totals.get(step, (None, None))
        self.progress.append(
            {
                "step": step,
                "cursor": cursor,
                "bytes_done": bytes_done,
                "items_done": items_done,
                "bytes_total": bytes_total,
                "items_total": items_total,
            }
        )
        super().checkpoint(
            step, cursor, chunks_written=chunks_written, bytes_done=bytes_done, bytes_stored=bytes_stored, items_done=items_done
        )

    def of(self, step: str) -> list[dict[str, Any]]:
        """The checkpoints of `step`, in order."""
        return [c for c in self.progress if c["step"] == step]

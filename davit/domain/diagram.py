"""The run machine drawn: a mermaid `stateDiagram-v2` from the machine's own markup.

The README's diagram is this text (a unit test compares them), so the drawing cannot drift
from the table that judges the runs. One line per (source, trigger) in the markup's order
(the table's rows, each row's sources sorted), so the text changes only when the table does.
"""

from __future__ import annotations

from typing import Any

from davit.domain.machine import markup


def mermaid(machine: dict[str, Any] | None = None) -> str:
    """The diagram of `machine` (a `MarkupMachine` markup; the run machine's by default)."""
    machine = machine if machine is not None else markup()
    lines = ["stateDiagram-v2", f"    [*] --> {machine['initial']}"]
    lines += [f"    {t['source']} --> {t['dest']}: {t['trigger']}" for t in machine["transitions"]]
    lines += [f"    {s['name']} --> [*]" for s in machine["states"] if s.get("final")]
    return "\n".join(lines) + "\n"

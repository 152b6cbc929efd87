"""The README draws the run machine from the machine's own export, so the drawing cannot drift
from the table that judges the runs."""

from __future__ import annotations

import re
from pathlib import Path

from davit.domain.diagram import mermaid
from davit.domain.machine import TRANSITIONS, markup

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_diagram() -> str:
    concepts = README.read_text().split("\n## Concepts\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```mermaid\n(.*?)```", concepts, flags=re.DOTALL)
    assert len(found) == 1, "README's Concepts section draws the run machine once, as a mermaid block"
    return str(found[0])


def test_the_readme_draws_the_machine_as_it_exports_itself() -> None:
    expected = mermaid()
    assert _readme_diagram() == expected, "update README.md's diagram under ## Concepts to:\n" + expected


def test_the_drawing_has_one_arrow_per_legal_move_and_nothing_else() -> None:
    arrows = {line.strip() for line in mermaid().splitlines()[1:] if ":" in line}
    assert arrows == {f"{s.value} --> {dest.value}: {trigger.value}" for trigger, sources, dest in TRANSITIONS for s in sources}
    assert mermaid(markup()) == mermaid()

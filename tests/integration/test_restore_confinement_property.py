"""Property (hypothesis): whatever a snapshot's tree says and whatever the target holds, a
restore changes nothing outside its target (GUARANTEES 13).

Trees have arbitrary entry names (`..`, `.`, empty, absolute, long, unicode, NUL, duplicates,
out of order), symlinks and hard links pointing out; targets have symlinks planted at
arbitrary depths pointing outside. Some examples bypass the tree check, so the descriptor-based
writer is shown to be confined on its own. Runs as root (as CI does): a chmod or chown through a
followed link would really change the outside.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import davit.adapters.files.restore as files_restore
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import walk_key
from davit.domain.errors import DavitError
from tests.integration.crafted_trees import ROOT, fingerprint, make_outside, publish, run_restore, store_chunk

COMMON = ["a", "b", "sub", "..", ".", "", "é", "𝄞", "n" * 300, "x\x00y"]
names = st.one_of(st.sampled_from(COMMON), st.text(max_size=12))
paths = st.one_of(
    st.lists(names, min_size=1, max_size=3).map("/".join),
    st.sampled_from(["/OUTSIDE/evil", "/OUTSIDE", "../outside/secret", "../outside", "a/../../outside"]),
)


@st.composite
def trees(draw: st.DrawFn) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for path in draw(st.lists(paths, max_size=8)):
        kind = draw(st.sampled_from(["f", "d", "l", "p"]))
        line: dict[str, Any] = {
            "p": path,
            "t": kind,
            "m": draw(st.sampled_from([0o644, 0o777, 0o4755, 0o700])),
            "mt": 1_600_000_000_000_000_000,
        }
        if kind == "l":
            line["l"] = draw(st.sampled_from(["/OUTSIDE", "/OUTSIDE/secret", "../../outside", "a"]))
        if kind == "f":
            line.update(s=5, c=["CHUNK"])
        if kind != "d" and draw(st.booleans()):
            line.update(n=2, dv=1)
            if entries and draw(st.booleans()):
                line["h"] = draw(st.sampled_from([e["p"] for e in entries] + ["../outside/secret", "/OUTSIDE/secret"]))
        entries.append(line)
    if draw(st.booleans()):
        entries.sort(key=lambda e: walk_key(e["p"]))  # walk order: more trees get past the first entries
    return {
        "entries": ([ROOT] if draw(st.booleans()) or not entries else []) + entries,
        "planted": draw(
            st.lists(
                st.tuples(
                    st.lists(st.sampled_from(["a", "b", "sub"]), min_size=1, max_size=3),
                    st.sampled_from(["/OUTSIDE", "/OUTSIDE/dir", "/OUTSIDE/secret"]),
                ),
                max_size=3,
            )
        ),
        "overwrite": draw(st.booleans()),
        "unchecked": draw(st.booleans()),
    }


def plant(target: Path, planted: list[tuple[list[str], str]], outside: Path) -> None:
    for parts, pointing in planted:
        where = target.joinpath(*parts)
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(pointing.replace("/OUTSIDE", str(outside)), where)
        except OSError:
            pass  # a link already planted on this path's way


def resolved(entries: list[dict[str, Any]], outside: Path, chunk: str) -> list[dict[str, Any]]:
    def swap(value: Any) -> Any:
        return value.replace("/OUTSIDE", str(outside)) if isinstance(value, str) else value

    out = []
    for line in entries:
        line = {k: swap(v) for k, v in line.items()}
        if "c" in line:
            line["c"] = [chunk]
        out.append(line)
    return out


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(
    {
        "entries": [{"p": "n" * 300, "t": "f", "m": 420, "mt": 1_600_000_000_000_000_000, "s": 5, "c": ["CHUNK"]}],
        "planted": [],
        "overwrite": False,
        "unchecked": True,
    }
)  # a name too long: a typed failure
@example(
    {
        "entries": [{"p": "n" * 300, "t": "d", "m": 420, "mt": 1_600_000_000_000_000_000}],
        "planted": [],
        "overwrite": False,
        "unchecked": True,
    }
)  # a name too long: a typed failure
@example(
    {
        "entries": [{"p": "n" * 300, "t": "l", "m": 420, "mt": 1_600_000_000_000_000_000, "l": "/OUTSIDE"}],
        "planted": [],
        "overwrite": False,
        "unchecked": True,
    }
)  # a name too long: a typed failure
@example(
    {
        "entries": [{"p": "n" * 300, "t": "p", "m": 420, "mt": 1_600_000_000_000_000_000}],
        "planted": [],
        "overwrite": False,
        "unchecked": True,
    }
)  # a name too long: a typed failure
@given(trees())
def test_nothing_outside_the_target_changes_whatever_the_tree_and_the_target_hold(tree: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        root = Path(tmp)
        outside = make_outside(root)
        repo = Repository.open(root / "repo")
        publish(repo, "s1", resolved(tree["entries"], outside, store_chunk(repo, b"hello")))
        target = root / "target"
        target.mkdir()
        plant(target, tree["planted"], outside)
        if tree["unchecked"]:  # the writer alone: no tree check between the tree and the target
            patch.setattr(files_restore, "checked", lambda entries, _snapshot_id: entries)  # prepare's check too
        before = fingerprint(root, leave_out=(root / "repo", target))
        try:
            run_restore(repo, target, "s1", overwrite=tree["overwrite"])
            event("restored")
        except DavitError as exc:  # a corrupt snapshot, a non-empty target, something in the way: typed
            event(f"refused: {type(exc).__name__}")
        assert fingerprint(root, leave_out=(root / "repo", target)) == before

"""Hard links survive a backup and a restore as hard links (a Maildir, an rsnapshot tree, a
package cache): one inode on disk after the restore, as before the backup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import CorruptSnapshot, PermanentError, RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.crafted_trees import ROOT, file_line, publish, run_restore
from tests.integration.test_files_adapter import backup, restore, snapshot_of


def inode_groups(root: Path) -> list[list[str]]:
    """Paths of regular files grouped by the inode they share (groups of two or more only)."""
    groups: dict[tuple[int, int], list[str]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.lstat()
            groups.setdefault((st.st_dev, st.st_ino), []).append(str(p.relative_to(root)))
    return sorted(g for g in groups.values() if len(g) > 1)


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    root = tmp_path / "linked"
    (root / "cur").mkdir(parents=True)
    (root / "new").mkdir()
    (root / "archive" / "2026").mkdir(parents=True)
    (root / "cur" / "msg1").write_bytes(os.urandom(200_000))  # several chunks
    os.link(root / "cur" / "msg1", root / "new" / "msg1")
    os.link(root / "cur" / "msg1", root / "archive" / "2026" / "msg1")
    (root / "cur" / "small").write_text("a small linked file")
    os.link(root / "cur" / "small", root / "new" / "small-again")
    (root / "alone.txt").write_text("one link only")
    return root


def test_hard_linked_files_come_back_as_one_inode_and_their_content_is_stored_once(linked: Path, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    ctx = backup(repo, linked, "b1")
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written))
    restore(repo, tmp_path / "out")
    assert (
        inode_groups(tmp_path / "out")
        == inode_groups(linked)
        == [["archive/2026/msg1", "cur/msg1", "new/msg1"], ["cur/small", "new/small-again"]]
    )
    assert snapshot_of(tmp_path / "out") == snapshot_of(linked)


def test_a_resumed_backup_still_knows_the_links_it_saw_before_the_stop(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(30):
        (source / f"a{i:02d}.bin").write_bytes(os.urandom(50_000))
    for i in range(30):  # the second link of each file comes after the stop
        os.link(source / f"a{i:02d}.bin", source / f"z{i:02d}.bin")
    repo = Repository.open(tmp_path / "repo")
    ctx = MemoryRunContext(run_id="b1", stop_after_checkpoints=2)
    tuning = Tuning(chunk_size=64 << 10, pack_size=200_000, checkpoint_seconds=60, inflight_chunks=4)
    with pytest.raises(RunStopped):
        backup(repo, source, "b1", ctx, tuning=tuning)
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    backup(repo, source, "b1", ctx, tuning=tuning)
    restore(repo, tmp_path / "out", snapshot="b1")
    assert inode_groups(tmp_path / "out") == inode_groups(source) and len(inode_groups(source)) == 30


def test_an_overwrite_restore_does_not_write_through_a_hard_link_to_a_file_outside_the_target(
    linked: Path, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(repo, linked, "b1")
    target = tmp_path / "target"
    target.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("must stay untouched")
    os.link(outside, target / "alone.txt")
    restore(repo, target, overwrite=True)
    assert (target / "alone.txt").read_text() == "one link only"
    assert outside.read_text() == "must stay untouched"


def test_a_restore_resumed_after_its_links_were_made_leaves_them_linked(linked: Path, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(repo, linked, "b1")
    restore(repo, tmp_path / "out")
    restore(repo, tmp_path / "out", overwrite=True)  # every entry done again, as after a crash
    assert inode_groups(tmp_path / "out") == inode_groups(linked)
    assert snapshot_of(tmp_path / "out") == snapshot_of(linked)


def test_a_snapshot_made_through_a_helper_container_restores_its_hard_links(tmp_path: Path) -> None:
    """The engine's tar stream has no link counts: a volume snapshot made through a helper
    records the first path of a linked file with one link and the later path naming it. The
    tree check refused every such snapshot ("not an earlier multiply-linked entry")."""
    repo = Repository.open(tmp_path / "repo")
    first = file_line(repo, "vol/greeting", b"hello\n")  # as `volume_archive_entries` records it: no "n"
    publish(repo, "h1", [ROOT, {**ROOT, "p": "vol"}, first, {**first, "p": "vol/hardlink", "h": "vol/greeting"}])
    run_restore(repo, tmp_path / "out", "h1")
    assert inode_groups(tmp_path / "out") == [["vol/greeting", "vol/hardlink"]]
    assert (tmp_path / "out" / "vol" / "hardlink").read_bytes() == b"hello\n"


@pytest.mark.parametrize(
    ("entries", "link"),
    [
        (["a"], {"p": "b", "h": "zz"}),  # a later path
        (["a"], {"p": "b", "h": "b"}),  # itself
        (["a"], {"p": "b", "h": "../a"}),
        (["a"], {"p": "b", "h": "/a"}),
        (["a"], {"p": "b", "h": "a//"}),
        (["a"], {"p": "b", "t": "l", "l": "x", "h": "a", "s": 0, "c": []}),  # a symlink, to a one-link entry
    ],
)
def test_a_hard_link_to_a_one_link_entry_is_refused_unless_a_file_names_a_well_formed_earlier_path(
    entries: list[str], link: dict[str, object], tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    lines = [ROOT, *(file_line(repo, p, b"x") for p in entries), {**file_line(repo, "b", b"x"), **link}]
    publish(repo, "s1", lines)
    with pytest.raises(CorruptSnapshot, match="a hard link to a path that is not an earlier entry of its type"):
        run_restore(repo, tmp_path / "out", "s1")
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_a_first_path_swapped_after_its_check_is_never_what_the_hard_link_is_made_to(
    linked: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write the target swaps the first path of a hard-linked inode for a file of
    their own between the restore's check of it and the link: the link must not be made to that
    file (they could then change what the restore put at the second path)."""
    from davit.adapters.files.confined import Writer

    repo = Repository.open(tmp_path / "repo")
    backup(repo, linked, "b1")
    target = tmp_path / "out"
    planted: list[tuple[int, int]] = []
    checked = Writer._made_here

    def check_then_swap(self: Writer, *args: Any) -> bool:
        verdict = checked(self, *args)
        if args[-1].hardlink_to == "cur/small" and not planted:
            (target / "attackers").write_text("not from the snapshot")
            st = (target / "attackers").stat()
            planted.append((st.st_dev, st.st_ino))
            os.replace(target / "attackers", target / "cur" / "small")
        return verdict

    monkeypatch.setattr(Writer, "_made_here", check_then_swap)
    with pytest.raises(PermanentError, match="cur/small: size 21"):  # the swapped path itself is caught
        restore(repo, target)

    assert planted, "the restore made no hard link: the test proves nothing"
    again = (target / "new" / "small-again").stat()
    assert (again.st_dev, again.st_ino) != planted[0]
    assert (target / "new" / "small-again").read_text() == "a small linked file"

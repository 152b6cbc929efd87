"""A restore writes only inside its target (GUARANTEES 13, issue 14 findings 1 and 2).

Finding 1: a crafted snapshot (published by anyone who can write a plain repository) with
`../x`, an absolute path, a file under a symlink, a hard link out of the tree or a `..`
directory with mode 0777 is corrupt: the run fails at prepare, naming the snapshot and the
entry, and nothing is written, inside the target or out. Finding 2: a symlink planted in the
target is replaced, never followed. The tests run as root (as CI does), so a setuid bit or a
chown through a followed link would really land outside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError, TargetNotEmpty
from tests.fakes import MemoryRunContext
from tests.integration.crafted_trees import (
    ROOT,
    SMALL,
    file_line,
    fingerprint,
    make_outside,
    publish,
    restore_work,
    run_restore,
)
from tests.integration.test_files_adapter import backup


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo")


def crafted(name: str, repo: Repository, outside: Path) -> list[dict[str, Any]]:
    """The entries of finding 1, each after a root and an honest file."""
    honest = file_line(repo, "a-first.txt", b"an honest file before the hostile entry")
    hostile: dict[str, list[dict[str, Any]]] = {
        "dotdot-file": [file_line(repo, "../x", b"written outside")],
        "absolute": [file_line(repo, str(outside / "abs"), b"written at an absolute path")],
        "under-a-symlink": [
            {"p": "lnk", "t": "l", "m": 0o777, "mt": 1, "l": str(outside / "dir")},
            file_line(repo, "lnk/f", b"#!/bin/sh\nid\n", mode=0o4755),
        ],
        "hard-link-out": [file_line(repo, "h", b"x", n=2, dv=1, h="../outside/secret")],
        "dotdot-dir-0777": [{"p": "../outside", "t": "d", "m": 0o777, "mt": 1}],
    }
    return [ROOT, honest, *hostile[name]]


@pytest.mark.parametrize("name", ["dotdot-file", "absolute", "under-a-symlink", "hard-link-out", "dotdot-dir-0777"])
def test_a_crafted_snapshot_fails_the_restore_before_anything_is_written(name: str, repo: Repository, tmp_path: Path) -> None:
    outside = make_outside(tmp_path)
    target = tmp_path / "target"
    publish(repo, "evil", crafted(name, repo, outside))  # type: ignore[arg-type]
    before = fingerprint(tmp_path, leave_out=(tmp_path / "repo",))
    work, ctx = restore_work(repo, target, "evil")
    with pytest.raises(PermanentError, match=r"snapshot evil is corrupt: entry .*nothing was restored") as raised:
        work.prepare(ctx)
        work.run(ctx)
        work.finish(ctx)
    assert type(raised.value).__name__ == "CorruptSnapshot"
    assert fingerprint(tmp_path, leave_out=(tmp_path / "repo",)) == before  # not even the target was made
    assert not target.exists()


@pytest.mark.parametrize("name", ["dotdot-file", "absolute", "under-a-symlink", "hard-link-out", "dotdot-dir-0777"])
def test_a_tree_swapped_after_prepare_still_cannot_write_outside(name: str, repo: Repository, tmp_path: Path) -> None:
    """A resumed run does not prepare again: the check runs on every pass over the tree, and
    the writer reaches the target only through directory descriptors anyway."""
    outside = make_outside(tmp_path)
    target = tmp_path / "target"
    publish(repo, "evil", crafted(name, repo, outside))  # type: ignore[arg-type]
    target.mkdir()
    before = fingerprint(tmp_path, leave_out=(tmp_path / "repo", target))
    work, ctx = restore_work(repo, target, "evil")
    work.details = {"snapshot_id": "evil", "target": str(target), "bytes": 0}  # as after a restart
    with pytest.raises(PermanentError, match="snapshot evil is corrupt"):
        work.run(ctx)
    assert fingerprint(tmp_path, leave_out=(tmp_path / "repo", target)) == before


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "does not parse"),
        (b'{"p": "x", "t": "f", "m": "0644", "mt": 1}', "integer field .* out of range"),
        (b'{"p": "x", "t": "f", "m": 420, "mt": 1, "x": {"user.a": "!!not base64"}}', "does not parse"),
        (b'{"p": "x", "t": "s", "m": 420, "mt": 1}', "unknown type"),
        (b'{"p": "x", "t": "f", "m": 420, "mt": 1, "c": ["../../etc/passwd"]}', "chunk id"),
        (b'{"p": "a\\u0000b", "t": "f", "m": 420, "mt": 1}', "NUL"),
        (b'{"p": "a//b", "t": "f", "m": 420, "mt": 1}', "empty"),
        (b'{"p": "./a", "t": "f", "m": 420, "mt": 1}', "'.'"),
        (b'{"p": "' + b"n" * 300 + b'", "t": "f", "m": 420, "mt": 1}', "longer than 255"),
        (b'{"p": "x", "t": "l", "m": 511, "mt": 1}', "symlink without a valid target"),
        (b'{"p": "d", "t": "d", "m": 493, "mt": 1, "h": "a"}', "hard link"),
        (b'{"p": "x", "t": "f", "m": 420, "mt": 1, "u": -1}', "integer field .* out of range"),
        (b"[1, 2]", "does not parse"),
    ],
)
def test_a_malformed_line_is_a_corrupt_snapshot_naming_the_line_and_the_reason(line: bytes, reason: str) -> None:
    from davit.adapters.files.treecheck import checked, parsed

    lines = [b'{"p": ".", "t": "d", "m": 493, "mt": 1}', b'{"p": "a", "t": "f", "m": 420, "mt": 1}', line]
    with pytest.raises(PermanentError, match=f"snapshot s1 is corrupt: entry .*{reason}"):
        list(checked(parsed(lines, "s1"), "s1"))


@pytest.mark.parametrize(
    ("paths", "reason"),
    [
        (["b", "a"], "out of walk order"),
        (["a", "a"], "out of walk order"),
        (["a/b"], "parent is not a directory"),
    ],
)
def test_order_duplicates_and_missing_parents_are_refused(paths: list[str], reason: str) -> None:
    from davit.adapters.files.treecheck import checked, parsed

    lines = [b'{"p": ".", "t": "d", "m": 493, "mt": 1}'] + [
        f'{{"p": "{p}", "t": "f", "m": 420, "mt": 1}}'.encode() for p in paths
    ]
    with pytest.raises(PermanentError, match=reason):
        list(checked(parsed(lines, "s1"), "s1"))


def test_a_tree_without_its_root_first_is_refused() -> None:
    from davit.adapters.files.treecheck import checked, parsed

    with pytest.raises(PermanentError, match="root"):
        list(checked(parsed([b'{"p": "a", "t": "f", "m": 420, "mt": 1}'], "s1"), "s1"))


def source_with_sub(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "sub" / "f.txt").write_text("belongs in the target")
    (source / "sub" / "deeper" / "g.txt").write_text("so does this")
    os.chmod(source / "sub", 0o777)
    return source


def test_a_restore_never_writes_through_a_symlink_planted_in_the_target(repo: Repository, tmp_path: Path) -> None:
    source = source_with_sub(tmp_path)
    backup(repo, source, "b1")
    outside = make_outside(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "sub")  # what a container can plant in its own volume
    before = fingerprint(outside)
    run_restore(repo, target, "b1", overwrite=True)
    assert fingerprint(outside) == before  # no sub/f.txt out there, its mode not 0777
    assert (target / "sub").is_dir() and not (target / "sub").is_symlink()
    assert (target / "sub" / "f.txt").read_text() == "belongs in the target"
    assert (target / "sub").stat().st_mode & 0o7777 == 0o777


def test_symlinks_planted_deeper_and_at_a_files_place_are_replaced_not_followed(repo: Repository, tmp_path: Path) -> None:
    source = source_with_sub(tmp_path)
    backup(repo, source, "b1")
    outside = make_outside(tmp_path)
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    os.symlink(outside / "dir", target / "sub" / "deeper")
    os.symlink(outside / "secret", target / "sub" / "f.txt")
    before = fingerprint(outside)
    run_restore(repo, target, "b1", overwrite=True)
    assert fingerprint(outside) == before
    assert (target / "sub" / "deeper" / "g.txt").read_text() == "so does this"
    assert not (target / "sub" / "deeper").is_symlink() and not (target / "sub" / "f.txt").is_symlink()


def test_without_overwrite_a_planted_symlink_fails_the_run_naming_it(repo: Repository, tmp_path: Path) -> None:
    """The target was empty at prepare; a link planted afterwards (during the restore) is not
    replaced without `overwrite = true`: the run fails and names it."""
    source = source_with_sub(tmp_path)
    backup(repo, source, "b1")
    outside = make_outside(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    work, ctx = restore_work(repo, target, "b1")
    work.prepare(ctx)
    os.symlink(outside, target / "sub")
    before = fingerprint(outside)
    with pytest.raises(PermanentError, match=f"{target / 'sub'}: a symlink where the snapshot has a directory"):
        work.run(ctx)
    assert fingerprint(outside) == before
    with pytest.raises(TargetNotEmpty):  # and a new run refuses the target as before
        restore_work(repo, target, "b1")[0].prepare(ctx)


def test_a_directory_in_the_way_of_a_file_is_never_removed(repo: Repository, tmp_path: Path) -> None:
    source = source_with_sub(tmp_path)
    backup(repo, source, "b1")
    target = tmp_path / "target"
    (target / "sub" / "f.txt").mkdir(parents=True)
    (target / "sub" / "f.txt" / "keep").write_text("the operator's")
    with pytest.raises(PermanentError, match="a directory where the snapshot has a file"):
        run_restore(repo, target, "b1", overwrite=True)
    assert (target / "sub" / "f.txt" / "keep").read_text() == "the operator's"


@pytest.mark.parametrize("access", ["mountpoint", "helper"])
def test_a_volume_restore_checks_the_volumes_subtree_before_it_reaches_the_engine(
    access: str, repo: Repository, tmp_path: Path
) -> None:
    """volume.restore (through the mountpoint or a helper container) checks the volume's
    re-rooted entries the same way, at prepare, before it connects to any engine: the engine
    named here does not exist, and the error is the snapshot's."""
    from davit.adapters.docker.restore import VolumeRestoreWork
    from davit.domain.jobs import VolumeRestoreJob

    publish(
        repo,
        "vols1",
        [ROOT, {"p": "data", "t": "d", "m": 0o755, "mt": 1}, file_line(repo, "data/../../escape", b"out of the volume")],
        job="vols",
        kind="volumes",
    )
    spec = VolumeRestoreJob(
        name="back",
        kind="volume.restore",
        engine=f"unix://{tmp_path}/no-engine.sock",
        access=access,
        helper_image="busybox:1",
        source={"job": "vols"},  # type: ignore[arg-type]
        volume="data",
        target={"volume": "restored", "overwrite": True},
    )  # type: ignore[arg-type]
    work, ctx = VolumeRestoreWork(RunInputs(spec, "restore1", SMALL, repo=repo)), MemoryRunContext(run_id="restore1")
    with pytest.raises(PermanentError, match=r"snapshot vols1 is corrupt: entry .*'\.\./\.\./escape'"):
        work.prepare(ctx)


def open_files() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass  # the listing's own descriptor
    return found


def test_a_tree_deeper_than_the_open_directory_limit_restores_whole(repo: Repository, tmp_path: Path) -> None:
    """The descriptor walk keeps at most MAX_OPEN_DIRS directories open and opens the others
    again when it climbs back: a tree 150 deep (files at every tenth level, siblings on the
    way back up) restores with every mode and mtime."""
    from davit.adapters.files.confined import MAX_OPEN_DIRS
    from tests.integration.test_files_adapter import snapshot_of

    source = tmp_path / "deep"
    level = source
    for depth in range(150):
        level = level / f"d{depth}"
        level.mkdir(parents=True)
        if depth % 10 == 0:
            (level / "f.txt").write_text(f"at depth {depth}")
            (level / "z-sibling").mkdir()  # met after the whole subtree below: its parent is reopened
            (level / "z-sibling" / "g.txt").write_text("after the descent")
            os.chmod(level, 0o750)
    assert 2 * MAX_OPEN_DIRS < 150
    backup(repo, source, "b1")
    open_before = open_files()
    run_restore(repo, tmp_path / "out", "b1")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)
    opened = open_files() - open_before
    assert {p for p in opened if p.startswith(str(tmp_path / "out"))} == set()  # every directory's closed

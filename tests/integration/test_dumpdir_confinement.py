"""`write_collection` (the writer of `davit export mongodump`) writes only inside DIR even when
someone else can write in DIR: a symlink planted at the name of its temporary file, or at the
database's directory between its check and the writing, is never written through.

An export directory is often a shared place (`/tmp/dump`, a backup share); davit runs as the
operator, often root, so following a planted link would truncate and overwrite any file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.mongo.dumpdir import META, dump_file_stem, write_collection
from davit.adapters.mongo.layout import meta_to_text
from davit.domain.errors import UnsafeName

META_TEXT = meta_to_text({"options": {}, "indexes": [], "collectionName": "coll", "type": "collection"})
VICTIM = b"a file outside DIR that the export must never touch\n"


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "victim"
    path.parent.mkdir()
    path.write_bytes(VICTIM)
    return path


def planted_tmp_name(name: str) -> str:
    """The temporary name the writer used before this fix (a sha1 prefix of the final name and
    the pid: predictable by anyone who can list processes)."""
    return f".{hashlib.sha1(name.encode()).hexdigest()[:16]}.{os.getpid()}.tmp"


def test_a_symlink_planted_at_the_temporary_files_name_is_never_written_through(tmp_path: Path) -> None:
    outside = victim(tmp_path)
    folder = tmp_path / "dump" / "db"
    folder.mkdir(parents=True)
    for name in (dump_file_stem("coll") + ".bson", dump_file_stem("coll") + META):
        (folder / planted_tmp_name(name)).symlink_to(outside)
    write_collection(tmp_path / "dump", "db.coll", META_TEXT, [b"\x05\x00\x00\x00\x00"], compress=False)
    assert outside.read_bytes() == VICTIM
    assert (folder / "coll.bson").read_bytes() == b"\x05\x00\x00\x00\x00"
    assert not (folder / "coll.bson").is_symlink() and not (folder / "coll.metadata.json").is_symlink()


def test_a_database_directory_swapped_for_a_symlink_after_its_check_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap lands right after the writer made (or found) the database's directory and, if
    it looks, after it checked that the directory is no symlink."""
    outside = victim(tmp_path).parent
    before = sorted(os.listdir(outside))
    root = tmp_path / "dump"
    real_open, real_is_symlink = os.open, Path.is_symlink
    swapped: list[bool] = []

    def swap(path: Path) -> None:
        if path == root / "db" and not swapped and path.is_dir():
            swapped.append(True)
            os.rename(path, tmp_path / "db-moved-away")
            os.symlink(outside, path)

    def open_then_swap(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if os.fsdecode(path) == "db" and dir_fd is not None:
            swap(root / "db")  # a writer holding the directory's descriptor: swapped right after its open
        return fd

    def is_symlink_then_swap(self: Path) -> bool:
        answer = real_is_symlink(self)
        swap(self)  # a writer checking by path: swapped right after its check
        return answer

    monkeypatch.setattr(os, "open", open_then_swap)
    monkeypatch.setattr(Path, "is_symlink", is_symlink_then_swap)
    try:
        write_collection(root, "db.coll", META_TEXT, [b"\x05\x00\x00\x00\x00"], compress=False)
    except (UnsafeName, OSError):
        pass  # refusing is fine; writing through the link is not
    monkeypatch.undo()
    assert swapped, "the hook never ran"
    assert sorted(os.listdir(outside)) == before
    assert (outside / "victim").read_bytes() == VICTIM

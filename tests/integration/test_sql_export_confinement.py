"""`davit export sql FILE` and `davit export pgdump SNAPSHOT DIR` write only where they were
told, even in a shared place someone else can write to: a symbolic link planted above FILE or
DIR (`/tmp/share/dumps -> /etc`) by another user, or in a directory others may write, is
refused naming it, and nothing is written through it; a link the operator (root or this user)
made in their own directory is followed, as before; a link planted AT the file is replaced, never
followed; a DIR that is a link is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.adapters.outfile import write_atomically
from davit.adapters.postgres.dumpdir import export_databases
from davit.domain.errors import PermanentError

STRANGER = 54321  # a uid that is neither root nor this user
VICTIM = b"outside: never to be touched\n"


def outside(tmp_path: Path) -> Path:
    where = tmp_path / "outside"
    where.mkdir()
    (where / "victim").write_bytes(VICTIM)
    return where


def untouched(where: Path) -> bool:
    return sorted(os.listdir(where)) == ["victim"] and (where / "victim").read_bytes() == VICTIM


def planted(tmp_path: Path, owner: int, share_mode: int = 0o755) -> Path:
    """`share/dumps` -> `outside`: a link in `share`, owned by `owner`."""
    share = tmp_path / "share"
    share.mkdir()
    share.chmod(share_mode)
    link = share / "dumps"
    link.symlink_to(tmp_path / "outside")
    os.lchown(link, owner, owner)
    return link


def export_pgdump(dest: Path) -> None:
    export_databases(dest, {"shop": []}, lambda cid: b"", "snapshot s1", nested=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a link owned by another user needs root (lchown)")
@pytest.mark.parametrize("export", ["sql", "pgdump"])
def test_a_link_another_user_planted_above_the_export_is_refused(tmp_path: Path, export: str) -> None:
    where = outside(tmp_path)
    link = planted(tmp_path, STRANGER)
    with pytest.raises(PermanentError, match="symbolic link") as caught:
        if export == "sql":
            write_atomically(link / "shop.sql", [b"SELECT 1;\n"])
        else:
            export_pgdump(link / "shop.dir")
    assert str(link) in str(caught.value)
    assert untouched(where)


@pytest.mark.parametrize("export", ["sql", "pgdump"])
def test_a_link_in_a_directory_others_may_write_is_refused(tmp_path: Path, export: str) -> None:
    where = outside(tmp_path)
    link = planted(tmp_path, os.geteuid(), share_mode=0o777)  # not sticky: anyone could have swapped it
    with pytest.raises(PermanentError, match="symbolic link"):
        if export == "sql":
            write_atomically(link / "shop.sql", [b"SELECT 1;\n"])
        else:
            export_pgdump(link / "shop.dir")
    assert untouched(where)


def test_a_link_the_operator_made_in_their_own_directory_is_followed(tmp_path: Path) -> None:
    where = outside(tmp_path)
    link = planted(tmp_path, os.geteuid())
    write_atomically(link / "shop.sql", [b"SELECT 1;\n"])
    assert (where / "shop.sql").read_bytes() == b"SELECT 1;\n"


def test_a_link_planted_at_the_file_is_replaced_not_followed(tmp_path: Path) -> None:
    where = outside(tmp_path)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (dumps / "shop.sql").symlink_to(where / "victim")
    write_atomically(dumps / "shop.sql", [b"SELECT 1;\n"])
    assert untouched(where)
    assert not (dumps / "shop.sql").is_symlink() and (dumps / "shop.sql").read_bytes() == b"SELECT 1;\n"


def test_a_pgdump_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    where = outside(tmp_path)
    (tmp_path / "shop.dir").symlink_to(where)
    with pytest.raises(PermanentError, match="exists"):
        export_pgdump(tmp_path / "shop.dir")
    assert untouched(where)

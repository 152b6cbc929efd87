"""The textfile for node_exporter: replaced whole, readable by node_exporter, and never written
through a symlink someone planted in its (shared) directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from davit.daemon.metricsfile import TextfileRefused, write_textfile


def test_the_textfile_is_replaced_whole_and_readable_by_node_exporter(tmp_path: Path) -> None:
    target = tmp_path / "davit.prom"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    os.umask(0o077)  # as davitd runs
    try:
        write_textfile(target, b"davit_up 1\n")
    finally:
        os.umask(0o022)
    assert target.read_bytes() == b"davit_up 1\n"
    assert target.stat().st_ino != old_inode  # a new file renamed over the old one, not rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["davit.prom"]  # no temporary file left


def test_a_symlink_at_the_textfile_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere" / "passwd"
    victim.parent.mkdir()
    victim.write_text("root:x:0:0\n")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    (textdir / "davit.prom").symlink_to(victim)
    with pytest.raises(TextfileRefused, match="is a symbolic link; not written through it"):
        write_textfile(textdir / "davit.prom", b"davit_up 1\n")
    assert victim.read_text() == "root:x:0:0\n"
    assert (textdir / "davit.prom").is_symlink()
    assert sorted(p.name for p in textdir.iterdir()) == ["davit.prom"]


def test_a_directory_at_the_textfile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "davit.prom").mkdir()
    with pytest.raises(TextfileRefused, match="not a regular file"):
        write_textfile(tmp_path / "davit.prom", b"davit_up 1\n")


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    monkeypatch.setattr("davit.adapters.outfile.secrets.token_hex", lambda _n: "guessed")
    (tmp_path / ".davit.prom.davit-partial-guessed").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_textfile(tmp_path / "davit.prom", b"davit_up 1\n")
    assert victim.read_text() == "keep\n"
    assert not (tmp_path / "davit.prom").exists()

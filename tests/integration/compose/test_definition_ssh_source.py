"""A stack's definition read on a source host reached over SSH (`[source] host = ...`) must be
confined as the local one is: a file named inside the project directory whose symlinks lead out
of it is not read (named in `symlinked_out`), whichever way the link is made: absolute,
relative, through a chain of links, through a directory link, or dangling at the time of the
check (an attacker who owns the place it points to could fill it in between the check and the
read). Each case is checked on this host's files and on the same files seen through the sshd
peer (it runs on this machine, as root), so the two views must agree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.adapters.compose.definition import LocalFiles, SourceFiles, project_definition
from davit.adapters.compose.sshsource import RemoteFiles
from davit.adapters.ssh.threaded import connect_threaded
from tests.integration.compose.test_pipeline_repeat import address
from tests.peers.state import SshPeer


@pytest.fixture(params=["local", "ssh"])
def files(request: pytest.FixtureRequest) -> Iterator[SourceFiles]:
    if request.param == "local":
        yield LocalFiles()
        return
    peer: SshPeer = request.getfixturevalue("ssh_peer")
    with connect_threaded(address(peer)) as host:
        yield RemoteFiles(host)


def _hostile_project(tmp_path: Path) -> Path:
    wd = tmp_path / "app"
    (wd / "env").mkdir(parents=True)
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "shadow").write_text("root:$6$not-for-the-target\n")
    (wd / "compose.yaml").write_text("services:\n  web:\n    image: x\n")
    (wd / "env" / "real.env").write_text("A=1\n")
    os.symlink("real.env", wd / "env" / "alias.env")  # stays inside: read
    os.symlink(outside / "shadow", wd / "env" / "abs.env")  # absolute, out
    os.symlink("../../host/shadow", wd / "env" / "rel.env")  # relative, out
    os.symlink("hop", wd / "env" / "chain.env")  # a chain whose last link leads out
    os.symlink("../../host/shadow", wd / "env" / "hop")
    os.symlink(outside, wd / "linkdir")  # a directory link: a plain name under it is out
    os.symlink(tmp_path / "not-yet" / "x", wd / "later.key")  # dangling now, out
    os.symlink("-n\nx", wd / "odd.key")  # a name meant to trip up a shell or a line reader
    (wd / "-n\nx").write_text("inside\n")
    return wd


def _definition(wd: Path, files: SourceFiles, follow: bool = False) -> tuple[set[str], list[str]]:
    env = ["real.env", "alias.env", "abs.env", "rel.env", "chain.env"]
    uninterpolated = {"services": {"web": {"env_file": [str(wd / "env" / name) for name in env]}}}
    secrets = {"a": str(wd / "linkdir" / "shadow"), "b": str(wd / "later.key"), "c": str(wd / "odd.key")}
    model = {"services": {"web": {}}, "secrets": {k: {"file": v} for k, v in secrets.items()}}
    found = project_definition("app", str(wd), [str(wd / "compose.yaml")], model, uninterpolated, files, follow)
    return set(found.files), [note.split(" -> ")[0] for note in found.symlinked_out]


def test_definition_files_symlinked_out_of_the_project_are_not_read_on_either_source(tmp_path: Path, files: SourceFiles) -> None:
    wd = _hostile_project(tmp_path)
    read, refused = _definition(wd, files)
    assert read == {"compose.yaml", "env/real.env", "env/alias.env", "odd.key"}
    assert sorted(refused) == sorted(
        str(wd / name) for name in ("env/abs.env", "env/rel.env", "env/chain.env", "linkdir/shadow", "later.key")
    )


def test_a_project_reached_through_a_symlinked_directory_still_reads_its_own_files(tmp_path: Path, files: SourceFiles) -> None:
    wd = _hostile_project(tmp_path)
    os.symlink(wd, tmp_path / "app-link")
    read, _refused = _definition(tmp_path / "app-link", files)
    assert read == {"compose.yaml", "env/real.env", "env/alias.env", "odd.key"}

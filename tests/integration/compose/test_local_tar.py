"""The migration's export needs GNU tar >= 1.28 on the davitd host (`--sort=name`); pre-flight
reads `tar --version` and refuses anything else, naming this host, before a source is stopped."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from davit.adapters.compose.localtools import gnu_tar_version, require_gnu_tar
from davit.adapters.compose.target import PreflightFailed


@pytest.mark.parametrize(
    ("first_line", "version"),
    [
        pytest.param("tar (GNU tar) 1.34", (1, 34), id="debian-12"),
        pytest.param("tar (GNU tar) 1.28\n", (1, 28), id="first-with-sort"),
        pytest.param("tar (GNU tar) 1.27.1", (1, 27), id="too-old-with-patch-level"),
        pytest.param("tar (GNU tar) 2.0", (2, 0), id="a-future-major"),
        pytest.param("bsdtar 3.7.2 - libarchive 3.7.2 zlib/1.2.12", None, id="bsdtar"),
        pytest.param("tar: unrecognized option '--version'", None, id="busybox"),
        pytest.param("", None, id="no-output"),
    ],
)
def test_gnu_tar_versions_are_read_from_the_first_line(first_line: str, version: tuple[int, int] | None) -> None:
    assert gnu_tar_version(first_line) == version


def test_this_hosts_gnu_tar_passes() -> None:
    found = require_gnu_tar()
    assert tuple(int(n) for n in found.split(".")) >= (1, 28)


def test_a_busybox_tar_on_the_davitd_host_fails_preflight_naming_the_host_and_tool(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("needs busybox (Debian's busybox-static, installed with the docker peer)")
    tar = tmp_path / "tar"
    tar.symlink_to(busybox)  # busybox runs the applet named like the link
    with pytest.raises(PreflightFailed, match=rf"this host \({socket.gethostname()}.*GNU tar >= 1\.28.*--sort=name"):
        require_gnu_tar(str(tar))


def test_no_tar_at_all_fails_preflight_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PreflightFailed, match=r"cannot run .*GNU tar >= 1\.28"):
        require_gnu_tar(str(tmp_path / "absent" / "tar"))

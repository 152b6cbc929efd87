"""What a migration needs on the davitd host: GNU tar >= 1.28, whose `--sort=name` makes the
export of a stopped source the same stream every time (`pipeline.tar_command`), so a resumed
migration finds its chunks already on the target. Checked at pre-flight, before anything is
stopped; the version is parsed from `tar --version`'s first line."""

from __future__ import annotations

import re
import socket
import subprocess

from davit.adapters.compose.target import PreflightFailed

GNU_TAR_MIN = (1, 28)  # the first GNU tar with --sort=name
_GNU_TAR = re.compile(r"^tar \(GNU tar\) (\d+)\.(\d+)")


def gnu_tar_version(first_line: str) -> tuple[int, int] | None:
    """(major, minor) from `tar --version`'s first line if it is GNU tar, else None."""
    found = _GNU_TAR.match(first_line.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def require_gnu_tar(tar: str = "tar") -> str:
    """The local GNU tar's version ("1.34"); `PreflightFailed` naming this host if there is
    none, or it is older than 1.28."""
    where = f"this host ({socket.gethostname()}, where davitd runs)"
    try:
        done = subprocess.run([tar, "--version"], capture_output=True, text=True, timeout=30, check=False)
        first = (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PreflightFailed(
            f"pre-flight on {where} failed: {tar} cannot run ({exc}); the export needs GNU tar "
            f">= {GNU_TAR_MIN[0]}.{GNU_TAR_MIN[1]}"
        ) from exc
    version = gnu_tar_version(first)
    if version is None or version < GNU_TAR_MIN:
        raise PreflightFailed(
            f"pre-flight on {where} failed: the export needs GNU tar >= {GNU_TAR_MIN[0]}.{GNU_TAR_MIN[1]} "
            f"(for --sort=name), and {tar} --version says {first.strip()[:120]!r}"
        )
    return f"{version[0]}.{version[1]}"

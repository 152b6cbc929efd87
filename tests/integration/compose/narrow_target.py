"""A target host whose PATH lacks some tools: a second sshd, with the peer's keys and engine,
whose sessions get a PATH of links to every program of the system's bin directories except
the ones named. The migration's commands then meet the target as they would a host where
those tools are not installed."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tests.peers.ports import free_port, port_open
from tests.peers.state import SshPeer

SYSTEM_BINS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _bin_without(where: Path, missing: set[str]) -> Path:
    where.mkdir()
    for d in SYSTEM_BINS:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = where / name
            if name not in missing and not link.exists() and os.access(os.path.join(d, name), os.X_OK):
                link.symlink_to(os.path.join(d, name))
    return where


@contextmanager
def target_without(ssh_peer: SshPeer, tmp_path: Path, missing: set[str]) -> Iterator[SshPeer]:
    """The ssh peer's host as seen through an sshd whose sessions lack `missing` on PATH."""
    peer_dir = Path(ssh_peer.key_file).parent
    d = tmp_path / "narrow-sshd"
    d.mkdir()
    path = _bin_without(d / "bin", missing)
    port = free_port()
    config = (peer_dir / "sshd_config").read_text()
    config = re.sub(r"(?m)^Port .*$", f"Port {port}", config)
    config = re.sub(r"(?m)^PidFile .*$", f"PidFile {d}/sshd.pid", config)
    config = re.sub(r"(?m)^(SetEnv .*)$", rf"\1 PATH={path}", config)  # sshd takes the first SetEnv line only
    (d / "sshd_config").write_text(config)
    host_key = (peer_dir / "ssh_host_ed25519_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")])
    try:
        deadline = time.monotonic() + 20
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the narrow sshd did not start: {(d / 'sshd.log').read_text()[-1000:]}")
            time.sleep(0.05)
        yield replace(ssh_peer, port=port, known_hosts=str(d / "known_hosts"))
    finally:
        proc.terminate()
        proc.wait(10)

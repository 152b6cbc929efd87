"""Peer `ssh`: a second "host" = a second dockerd plus OpenSSH's sshd on a loopback port.

Remote sessions get DOCKER_HOST pointing at the second engine (sshd's `SetEnv`), so
`ssh root@127.0.0.1 -p PORT docker volume ls` lists that host's volumes. Host and user keys
are generated per start; clients verify the host key against the generated known_hosts.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    apt_install,
    fresh_dir,
    run,
    run_dir,
    running_pid,
    spawn,
    stop,
    wait_until,
)
from tests.peers.docker_engine import DEB_PACKAGES, IMAGE, Engine, engine_args, ensure_docker_client
from tests.peers.ports import free_port, port_open

NAME = "sshd"
ENGINE2 = "dockerd2"
# Like engine 1, no default bridge; a distinct address pool for user networks.
ENGINE2_ARGS = engine_args(2)


def _dir() -> Path:
    return run_dir() / "ssh"


def ssh_argv(entry: dict[str, Any], *command: str) -> list[str]:
    """An `ssh` command line for the peer with strict host-key checking."""
    return [
        "ssh",
        "-F",
        "none",
        "-p",
        str(entry["port"]),
        "-i",
        entry["key_file"],
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={entry['known_hosts']}",
        "-o",
        "ConnectTimeout=5",
        f"{entry['user']}@{entry['host']}",
        *command,
    ]


def _write_config(d: Path, port: int, docker_host: str) -> Path:
    config = d / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
SetEnv DOCKER_HOST={docker_host}
Subsystem sftp internal-sftp
""")
    return config


def up() -> dict[str, Any]:
    apt_install([*DEB_PACKAGES, "openssh-server", "openssh-client"])
    ensure_docker_client()
    engine = Engine(ENGINE2)
    engine.start(ENGINE2_ARGS)
    engine.load_test_image()

    stop(NAME)
    d = fresh_dir(_dir())
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "davit-peer-host", "-f", d / "ssh_host_ed25519_key"])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "davit-peer-client", "-f", d / "id_ed25519"])
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    host_pub = (d / "ssh_host_ed25519_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = _write_config(d, port, engine.host)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    run(["/usr/sbin/sshd", "-t", "-f", config])
    spawn(NAME, ["/usr/sbin/sshd", "-D", "-f", config, "-E", run_dir() / "logs" / "sshd.log"])
    wait_until(lambda: port_open(port), what=f"sshd on 127.0.0.1:{port}", name=NAME, timeout=20)

    entry = {
        "ok": True,
        "host": "127.0.0.1",
        "port": port,
        "user": getpass.getuser(),
        "key_file": str(d / "id_ed25519"),
        "known_hosts": str(d / "known_hosts"),
        "docker_host": engine.host,
        "image": IMAGE,
    }
    if not _remote_sees_engine2(entry):
        raise PeerError("ssh session does not see the second engine as DOCKER_HOST")
    return entry


def _remote_sees_engine2(entry: dict[str, Any]) -> bool:
    out = run(ssh_argv(entry, "echo $DOCKER_HOST; docker version --format {{.Server.Version}}"), timeout=30).split()
    return bool(out) and out[0] == entry["docker_host"] and len(out) == 2


def check(entry: dict[str, Any]) -> bool:
    engine = Engine(ENGINE2)
    if running_pid(NAME) is None or running_pid(ENGINE2) is None or not engine.ping():
        return False
    try:
        return engine.has_image(IMAGE) and _remote_sees_engine2(entry)
    except PeerError:
        return False


def down() -> None:
    stop(NAME)
    Engine(ENGINE2).stop()
    if _dir().exists():
        fresh_dir(_dir()).rmdir()

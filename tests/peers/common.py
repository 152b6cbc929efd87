"""Paths, ports, processes and small helpers shared by the peer modules (standard library only)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class PeerError(Exception):
    """A peer could not be provisioned or started; `log_tail` carries what its log said."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def say(message: str) -> None:
    print(f"peers: {message}", flush=True)


# ---------------------------------------------------------------- paths


def run_dir() -> Path:
    """Runtime dirs, pid files and logs: `<repo>/.peers` unless DAVIT_PEERS_DIR says otherwise."""
    return Path(os.environ.get("DAVIT_PEERS_DIR") or REPO_ROOT / ".peers").resolve()


def state_path() -> Path:
    return Path(os.environ.get("DAVIT_PEERS_STATE") or run_dir() / "state.json")


def cache_dir() -> Path:
    """Builds and downloads kept across runs: `~/.cache/davit/peers` (or DAVIT_PEERS_CACHE)."""
    if os.environ.get("DAVIT_PEERS_CACHE"):
        return Path(os.environ["DAVIT_PEERS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "davit" / "peers"


def log_dir() -> Path:
    return run_dir() / "logs"


def sock_dir() -> Path:
    """Unix sockets and exec roots need short paths (108 bytes): a per-checkout dir under /tmp."""
    digest = hashlib.sha1(str(run_dir()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"davit-peers-{digest}"


def fresh_dir(path: Path) -> Path:
    """Empty `path` (unmounting anything left mounted on or below it) and create it."""
    if path.exists():
        unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def unmount_below(path: Path) -> None:
    # A dockerd killed without cleanup leaves its data root bind-mounted on itself, so the path
    # itself counts too (rmtree would fail with EBUSY).
    root = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    targets = [line.split()[1] for line in mounts if line.split()[1] == root or line.split()[1].startswith(root + "/")]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


# ---------------------------------------------------------------- commands


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    timeout: float = 1800,
) -> str:
    """Run a command to completion; raise PeerError carrying its output when it fails."""
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(
            [str(a) for a in argv],
            env=full_env,
            cwd=cwd,
            input=input,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"{argv[0]}: {exc}") from exc
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise PeerError(f"`{' '.join(str(a) for a in argv[:4])} ...` exited {proc.returncode}", tail(output))
    return output


def apt_install(packages: Sequence[str]) -> None:
    """Install the Debian packages that are not installed yet."""
    missing = [pkg for pkg in packages if not deb_installed(pkg)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise PeerError(f"need root to apt-get install {' '.join(missing)}")
    # peers start in parallel threads and dpkg takes one installer at a time: without the lock
    # a second peer's install failed at once on dpkg's lock (mariadb beside docker, stop 30);
    # DPkg::Lock::Timeout waits for an apt-get of another process instead of failing
    with _APT:
        missing = [pkg for pkg in missing if not deb_installed(pkg)]
        if not missing:
            return
        say(f"installing Debian packages {' '.join(missing)} (first time)...")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
        try:
            run([*apt, "install", "-y", "--no-install-recommends", *missing], env=env)
        except PeerError:
            run([*apt, "update"], env=env)
            run([*apt, "install", "-y", "--no-install-recommends", *missing], env=env)


_APT = threading.Lock()


def deb_installed(package: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and proc.stdout.endswith(" installed")


def pip_download(requirement: str, sha256: str, dest: Path) -> Path:
    """Download one sdist from PyPI with pip, checked against its pinned hash."""
    dest.mkdir(parents=True, exist_ok=True)
    req = dest / "requirements.txt"
    req.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    pips = [[sys.executable, "-m", "pip"], ["pip3"], ["pip"]]
    errors = []
    for pip in pips:
        if pip[0] != sys.executable and not shutil.which(pip[0]):
            continue
        try:
            run([*pip, "download", "--no-deps", "--no-binary", ":all:", "--require-hashes", "-r", req, "-d", dest])
        except PeerError as exc:
            errors.append(f"{exc} {exc.log_tail}")
            continue
        return next(p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip")))
    raise PeerError(f"pip download {requirement} failed", "\n".join(errors)[-3000:])


# ---------------------------------------------------------------- daemons


def pid_file(name: str) -> Path:
    return run_dir() / "pids" / f"{name}.pid"


def spawn(name: str, argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start a daemon in its own session, output to logs/NAME.log; remember its pid."""
    log_dir().mkdir(parents=True, exist_ok=True)
    pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    with open(log_dir() / f"{name}.log", "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {argv[0]}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [str(a) for a in argv],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(name).write_text(json.dumps({"pid": proc.pid, "exe": Path(str(argv[0])).name}))
    return proc.pid


def running_pid(name: str) -> int | None:
    """The pid recorded for NAME if that process is still alive (and not a zombie)."""
    try:
        info = json.loads(pid_file(name).read_text())
        pid, exe = int(info["pid"]), str(info["exe"])
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError):
        return None
    if "\nState:\tZ" in status:
        return None
    if cmdline and exe.encode() not in cmdline:  # empty while an exec is still loading
        return None  # the pid was reused by another program
    return pid


def stop(name: str, timeout: float = 30) -> None:
    """SIGTERM the recorded daemon, wait for it, SIGKILL if it lingers."""
    pid = running_pid(name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running_pid(name) is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if running_pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(pid)
    pid_file(name).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(check: Callable[[], bool], *, what: str, name: str, timeout: float) -> None:
    """Poll `check` until true; fail early with the log tail if daemon NAME died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if running_pid(name) is None:
            raise PeerError(f"{name} exited while waiting for {what}", log_tail(name))
        time.sleep(0.3)
    raise PeerError(f"timed out after {timeout:.0f}s waiting for {what}", log_tail(name))


def log_tail(name: str, lines: int = 40) -> str:
    try:
        return tail((log_dir() / f"{name}.log").read_text(errors="replace"), lines)
    except OSError:
        return ""


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])[-4000:]


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise PeerError("the Go toolchain (`go`) is not on PATH; it comes with the machine")
    return found


def go_build_cached(
    module_dir: Path, sources: Sequence[str], target_dir: str, binary: str, package: str, what: str, timeout: float = 1800
) -> Path:
    """Build `package` from our small Go module at `module_dir` once per content of its
    `sources` files, into `cache_dir()/<target_dir>-<digest>/<binary>`; the binary's path."""
    digest = hashlib.sha256()
    for name in sources:
        digest.update((module_dir / name).read_bytes())
    target = cache_dir() / f"{target_dir}-{digest.hexdigest()[:12]}" / binary
    if not target.exists():
        say(f"building {what}...")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        run(
            [go_binary(), "build", "-trimpath", "-o", tmp, package],
            cwd=module_dir,
            env={"GOFLAGS": "-mod=readonly -buildvcs=false"},
            timeout=timeout,
        )
        os.replace(tmp, target)
    return target

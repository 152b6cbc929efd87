"""rustic (restic's repository format, in Rust), built once with cargo and cached for the benches.

No distribution packages rustic, so the bench builds the pinned release with `cargo install
rustic-rs --locked --version 0.11.4 --root CACHE` (tens of minutes on 2 cores: 44 measured on a shared machine) into
`$DAVIT_BENCH_CACHE/rustic` (default `~/.cache/davit-bench/rustic`) and reuses it from then on.
A machine without cargo, or a `--quick` run (CI never builds it), skips rustic with one line
saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

VERSION = "0.11.4"


def cache_dir() -> Path:
    base = os.environ.get("DAVIT_BENCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "davit-bench"
    return Path(base) / "rustic"


def binary() -> Path:
    return cache_dir() / "bin" / "rustic"


def cargo() -> str | None:
    return shutil.which("cargo") or next((str(p) for p in [Path.home() / ".cargo/bin/cargo"] if p.exists()), None)


def provide(build: bool) -> tuple[Path | None, str]:
    """The cached rustic binary, built first if `build` and cargo is at hand; else None and why."""
    exe = binary()
    if exe.exists():
        return exe, ""
    if not build:
        return None, f"rustic {VERSION} is not built yet ({exe}); a run without --quick builds it once with cargo"
    tool = cargo()
    if tool is None:
        return None, f"cargo not found, so rustic-rs {VERSION} cannot be built (install rustup to get it)"
    log = cache_dir() / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"building rustic-rs {VERSION} with cargo into {cache_dir()} (once; tens of minutes; log {log}) ...", flush=True)
    with open(log, "wb") as out:
        argv = [tool, "install", "rustic-rs", "--locked", "--version", VERSION, "--root", str(cache_dir())]
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0 or not exe.exists():
        tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
        return None, f"cargo install rustic-rs {VERSION} failed ({code}): {tail}"
    return exe, ""

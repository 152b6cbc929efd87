"""Content-defined chunking (issue 18): the chunker's throughput, the shifted-insert case, and
the first backup against `tar | zstd` with this code and, given `--base`, the code before.

    .venv/bin/python bench/chunking.py [--size-mb 200] [--insert-mb 256] [--rounds 3] [--base DIR]

- Throughput: `Chunking.cut` (FastCDC, the default of a new repository; fixed 1 MiB for
  reference) over a buffer in memory and over a file in the page cache, MB/s of wall time and of
  this process's CPU time (the CPU figure hardly moves with the machine's load).
- Shifted inserts: a file of `--insert-mb` random bytes backed up, 12 inserts of 64 bytes at
  random places, backed up again; the repository's growth (bytes of packs) for davit with fixed
  chunks (a repository made before chunking was recorded), davit with FastCDC, restic and borg.
  davit runs in this process (`FilesBackupWork`), so only the cutting differs.
- First backup: `tar cf - . | zstd -T0 -3`, davit (this checkout) and davit (`--base`, a checkout
  of the code before) on the tree of `bench/files.py`, `--rounds` rounds in alternating order, a
  fresh `davitd --home` each time (run with PYTHONPATH set to the checkout, checked by whether the
  repository's config.json records a chunking); medians and ratios, and the CPU seconds each
  used (davitd's from its start-up's end; tar's and zstd's), which a busy machine moves less.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import load_note, table
from files import Daemon, cached_tree, drop_job, fresh_dir, timed, warm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from davit.adapters.files.backup import FilesBackupWork  # noqa: E402
from davit.adapters.repository.chunking import Chunking  # noqa: E402
from davit.adapters.repository.repository import Repository  # noqa: E402
from davit.adapters.repository.tuning import Tuning  # noqa: E402
from davit.adapters.runwork import RunInputs  # noqa: E402
from davit.domain.jobs import FilesBackupJob  # noqa: E402
from tests.fakes import MemoryRunContext  # noqa: E402

MiB = 1 << 20


def random_bytes(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(MiB, size - at)) for at in range(0, size, MiB))


INSERTS, INSERT_BYTES = 12, 64


def throughput(work: Path, size_mb: int) -> None:
    data = random_bytes(size_mb * MiB, 1)
    path = work / "chunker-input.bin"
    path.write_bytes(data)
    rows = []
    for label, chunking in (("FastCDC (min 512K, mean ~750K, max 4M)", Chunking.fastcdc()), ("fixed 1 MiB", Chunking.fixed(MiB))):
        chunker = chunking.chunker()
        for source in ("bytes in memory", "file (page cache)"):
            walls, cpus, count = [], [], 0
            for _ in range(3):
                stream = io.BytesIO(data) if source.startswith("bytes") else open(path, "rb", buffering=0)  # noqa: SIM115
                wall, cpu = time.perf_counter(), time.process_time()
                count = sum(1 for _ in chunker.cut(stream))
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                stream.close()
            size = len(data) / 1e6
            mean = len(data) / count / 1024
            rows.append(
                [
                    label,
                    source,
                    f"{size / statistics.median(walls):.0f}",
                    f"{size / statistics.median(cpus):.0f}",
                    f"{mean:.0f} KiB",
                ]
            )
    path.unlink()
    print(table(["chunker", "input", "MB/s (wall)", "MB/s (CPU)", "mean chunk"], rows, f"\nChunker throughput ({load_note()})"))


def davit_growth(work: Path, source: Path, fixed: bool, insert: Callable[[], None]) -> int:
    root = fresh_dir(work / "cdc-repo")
    shutil.rmtree(root)
    repo = Repository.open(root)
    if fixed:  # as a repository made before issue 18: no chunking recorded, fixed pieces
        config = json.loads((root / "config.json").read_bytes())
        del config["chunking"]
        (root / "config.json").write_text(json.dumps(config))
        repo = Repository.open(root)
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    for run in ("b1", "b2"):
        if run == "b2":
            before = packs_bytes(root)
            insert()
        work_ = FilesBackupWork(RunInputs(spec, run, Tuning(), repo=repo))
        ctx = MemoryRunContext(run_id=run)
        work_.prepare(ctx)
        work_.run(ctx)
        work_.finish(ctx)
    grown = packs_bytes(root) - before
    shutil.rmtree(root)
    return grown


def packs_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def peer_growth(work: Path, source: Path, tool: str, insert: Callable[[], None]) -> int | None:
    if shutil.which(tool) is None:
        return None
    repo = work / f"{tool}-insert-repo"
    shutil.rmtree(repo, ignore_errors=True)
    env = {
        **os.environ,
        "RESTIC_PASSWORD": "bench",
        "RESTIC_REPOSITORY": str(repo),
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
    }
    if tool == "restic":
        init = ["restic", "init", "--repository-version", "2"]
        backup = ["restic", "backup", "--compression", "auto", "."]
    else:
        init = ["borg", "init", "-e", "none", str(repo)]
        backup = ["borg", "create", "--compression", "zstd,3", f"{repo}::{{now:%H%M%S%f}}", "."]
    subprocess.run(init, env=env, cwd=source, capture_output=True, check=True)
    subprocess.run(backup, env=env, cwd=source, capture_output=True, check=True)
    before = packs_bytes(repo)
    insert()
    subprocess.run(backup, env=env, cwd=source, capture_output=True, check=True)
    grown = packs_bytes(repo) - before
    shutil.rmtree(repo)
    return grown


def shifted_inserts(work: Path, size_mb: int) -> None:
    source = fresh_dir(work / "insert-source")
    target = source / "disk.img"
    original = random_bytes(size_mb * MiB, 2)

    def reset() -> None:
        target.write_bytes(original)

    def insert() -> None:
        rng = random.Random(3)
        data = bytearray(original)
        for _ in range(INSERTS):
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(INSERT_BYTES)
        target.write_bytes(bytes(data))

    rows = []
    for label, measure in (
        ("davit, fixed 1 MiB chunks (before)", lambda: davit_growth(work, source, True, insert)),
        ("davit, FastCDC", lambda: davit_growth(work, source, False, insert)),
        ("restic", lambda: peer_growth(work, source, "restic", insert)),
        ("borg", lambda: peer_growth(work, source, "borg", insert)),
    ):
        reset()
        grown = measure()
        rows.append([label, "not installed" if grown is None else f"{grown / MiB:.1f} MiB ({grown / len(original) * 100:.1f}%)"])
    shutil.rmtree(source)
    title = f"\nRepository growth: {size_mb} MiB file, {INSERTS} inserts of {INSERT_BYTES} bytes ({load_note()})"
    print(table(["tool", "growth"], rows, title))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def davit_first_backup(tree: Path, work: Path, checkout: Path) -> tuple[float, float, bool]:
    """One first backup by a fresh davitd running `checkout`'s code: (seconds, CPU seconds of
    davitd from its start-up's end to the run's end, config records a chunking)."""
    home = fresh_dir(work / "cdc-home")
    (home / "davit.toml").write_text("# bench/chunking.py: davit's defaults\n")
    os.environ["PYTHONPATH"] = str(checkout)
    try:
        warm(tree)
        os.sync()
        daemon = Daemon(home, "first")
        started = cpu_seconds(daemon.proc.pid)
        dropped = drop_job(home, "bench-files", f'name = "bench-files"\nkind = "files.backup"\n\n[source]\npath = "{tree}"\n')
        timing = daemon.wait_run("bench-files", 0, dropped, ("store",))
        cpu = cpu_seconds(daemon.proc.pid) - started
        daemon.stop()
    finally:
        del os.environ["PYTHONPATH"]
    records = "chunking" in json.loads((home / "repository" / "config.json").read_bytes())
    shutil.rmtree(home)
    return timing.wall, cpu, records


def first_backups(work: Path, size_mb: int, rounds: int, base: Path | None) -> None:
    tree = cached_tree(work, size_mb)
    warm(tree)
    variants: list[tuple[str, Path | None]] = [("tar|zstd", None), ("davit (this checkout)", ROOT)]
    if base is not None:
        variants.append(("davit (--base)", base))
    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    cpus: dict[str, list[float]] = {name: [] for name, _ in variants}
    for n in range(rounds):
        order = variants if n % 2 == 0 else variants[::-1]
        for name, checkout in order:
            if checkout is None:
                archive = fresh_dir(work / "tar") / "tree.tar.zst"
                warm(tree)
                before = os.times()
                seconds[name].append(timed(f"tar cf - . | zstd -q -T0 -3 > {archive}", tree).seconds)
                after = os.times()
                cpus[name].append(after.children_user + after.children_system - before.children_user - before.children_system)
                shutil.rmtree(archive.parent)
            else:
                took, cpu, records = davit_first_backup(tree, work, checkout)
                cpus[name].append(cpu)
                expected = checkout == ROOT
                if records != expected:
                    raise SystemExit(f"FAIL: {name}'s daemon did not run {checkout}'s code (chunking recorded: {records})")
                seconds[name].append(took)
            print(f"  round {n + 1}: {name} {seconds[name][-1]:.2f} s, CPU {cpus[name][-1]:.2f} s ({load_note()})", flush=True)
    tar = statistics.median(seconds["tar|zstd"])
    rows = []
    for name, _ in variants:
        med = statistics.median(seconds[name])
        ratio = tar / med
        goal = "" if name == "tar|zstd" else ("met" if ratio >= 0.8 else "missed")
        cpu = statistics.median(cpus[name])
        rows.append([name, f"{med:.2f}", " ".join(f"{s:.2f}" for s in seconds[name]), f"{ratio:.2f}x", goal, f"{cpu:.2f}"])
    headers = ["first backup", "median s", "rounds", "tar|zstd / it", "goal >= 0.8x", "median CPU s"]
    print(table(headers, rows, f"\nFirst backup, {size_mb} MB tree"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="the tree of bench/files.py (default 200)")
    parser.add_argument("--insert-mb", type=int, default=256, help="the file of the shifted-insert case (default 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(".bench"))
    parser.add_argument("--base", type=Path, help="a checkout of the code to compare with (e.g. `git worktree add`)")
    parser.add_argument("--skip", default="", help="comma-separated: throughput,inserts,first")
    args = parser.parse_args()
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(",")) - {""}
    print(f"bench/chunking.py; {os.cpu_count()} CPUs; {load_note()}")
    if "throughput" not in skip:
        throughput(work, args.insert_mb)
    if "inserts" not in skip:
        shifted_inserts(work, args.insert_mb)
    if "first" not in skip:
        first_backups(work, args.size_mb, args.rounds, args.base.resolve() if args.base else None)
    print(f"\nat the end: {load_note()}")


if __name__ == "__main__":
    main()

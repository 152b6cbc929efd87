"""Docker benchmark: volume backup and migration transfer against the obvious pipelines.

Same data for every contender: a Docker volume of `--size-mb` (default 1024) of mixed files
(many small text files, random blobs, a run of zeros) on the test engine peer. Measured:
davit's volume backup through the mountpoint and through a helper container (`access =
"helper"`, the path for an engine elsewhere), each cold then repeated on unchanged data, vs
`docker run --rm -v VOL:/v IMAGE tar c /v | zstd -T0 > file`; davit's migration data path
(export -> content-addressed transfer over asyncssh -> unpack on the target; cold, then
repeated) vs `tar c | zstd -T0 | ssh target 'zstd -d | tar x'`. Prints MB/s, peak RSS (largest process of the measured
command, from wait4) and ratios. Needs the docker and ssh peers (`python -m tests.peers up
--only docker,ssh`, found through the peers' state file, `.peers/state.json` or
DAVIT_PEERS_STATE); run as root on the engine's host. `--quick`: a 24 MB volume (fewer small
files, less zeros); `--goals-json PATH` writes the goal lines for `make bench`'s summary.
Also, unless `--volume-only`: `compose.migrate` of a whole stack with a locally built image
against `docker save | zstd | ssh 'zstd -d | docker load'` plus the tar pipelines, and a
repeated migration's bytes on the wire (`bench/dockerstack.py`, issue 21; `--compose-only`
measures that alone).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's directory comes first on sys.path and its name would hide the
# `docker` package: put the repository root there instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from bench.benchlib import Goals, Spec, add_goal_arguments, cpu_count, disk_of, table  # noqa: E402
from bench.dockerstack import StackResult, measure_stack  # noqa: E402
from tests.fakes import MemoryRunContext  # noqa: E402

QUICK_MB = 24
NO_LOG_PIPELINE = "docker run --log-driver none tar | zstd"
SSH_PIPELINE = "tar | zstd -T0 | ssh 'zstd -d | tar x'"
SAVE_PIPELINE = "docker save | zstd -T0 | ssh 'zstd -d | docker load'"
QUICK_IMAGE_MB = 8

# Issue 6's goals for the volume backups (against the pipeline without a log driver, the fairer
# baseline) and issue 18's for the migration's data path. Ratios: pipeline seconds / davit's,
# except the repeat's: repeated run seconds / cold run seconds.
GOALS = {
    "volume": Spec(f"volume backup (mountpoint) vs `{NO_LOG_PIPELINE}`", ">=", 0.8, "x", 6),
    "helper": Spec(f"volume backup (helper container) vs `{NO_LOG_PIPELINE}`", ">=", 0.8, "x", 6),
    "migrate": Spec(f"compose.migrate data path vs `{SSH_PIPELINE}`", ">=", 0.8, "x", 18),
    "migrate-repeat": Spec("compose.migrate data path repeated on unchanged data, share of the cold run", "<", 0.1, "x", 18),
    # issue 21: the whole migration of a stack with a local image (`bench/dockerstack.py`)
    "stack": Spec(f"compose.migrate of a stack with a local image vs `{SAVE_PIPELINE}` + `{SSH_PIPELINE}`", ">=", 0.8, "x", 21),
    "stack-repeat": Spec(
        "compose.migrate repeated (target project removed): bytes sent on the wire, share of the cold run's", "<", 0.02, "x", 21
    ),
}


def measured(fn: Callable[[], None]) -> tuple[float, float]:
    """Run `fn` in a forked child; (seconds, peak RSS in MB of the child and its children)."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException as exc:
            print(f"  failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("a measured step failed")
    return time.monotonic() - start, usage.ru_maxrss / 1024


def shell(cmd: str) -> Callable[[], None]:
    def go() -> None:
        subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)

    return go


def fill(root: Path, megabytes: int) -> None:
    """3,000 small text files (about 25 MB), 64 MB of zeros and blobs for the rest; a volume under
    1 GB gets proportionally fewer small files and zeros."""
    rnd = random.Random(11)
    words = ["davit", "crane", "winch", "hull", "keel", "deck", "rope", "lifeboat"]
    small, zeros = max(50, min(3000, megabytes * 3000 // 1024)), max(1, min(64, megabytes // 16))
    for i in range(small):
        d = root / "small" / f"d{i % 40}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"n{i}.txt").write_text(" ".join(rnd.choice(words) for _ in range(rnd.randint(10, 2000))))
    (root / "zeros.img").write_bytes(b"\0" * (zeros << 20))
    left, n = megabytes - zeros - small * 25 // 3000, 0
    while left > 0:
        size = min(left, 64)
        with open(root / f"blob{n:02d}.bin", "wb") as fh:
            for _ in range(size):
                fh.write(rnd.randbytes(1 << 20) if n % 2 == 0 else (rnd.randbytes(4096) * 256))
        left -= size
        n += 1


def report_volume(results: dict[str, tuple[float, float]], size_mb: int) -> None:
    """The table of every result so far, and the volume backups' ratios to the pipeline."""
    rows = [[name, f"{secs:.1f}", f"{size_mb / secs:.0f}", f"{rss:.0f}"] for name, (secs, rss) in results.items()]
    print(table(["contender", "seconds", "MB/s", "peak RSS MB"], rows, f"\n{size_mb} MB volume"))
    pipeline, no_log = results["docker run tar | zstd -T0"][0], results[NO_LOG_PIPELINE][0]
    for path in ("volume", "helper"):
        cold = results[f"davit {path} backup (cold)"][0]
        print(
            f"\n{path} backup: davit at {pipeline / cold:.2f}x the pipeline's speed, {no_log / cold:.2f}x that "
            f"of the pipeline without a log driver (goal >= 0.8x); repeated run takes "
            f"{results[f'davit {path} backup (repeat)'][0] / cold:.2f}x the cold run's time"
        )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=Path(".bench/docker"))
    parser.add_argument("--volume-only", action="store_true", help="measure the volume backups, not the migration")
    parser.add_argument("--compose-only", action="store_true", help="measure the whole-stack migration only (issue 21)")
    parser.add_argument("--image-mb", type=int, default=200, help="the stack's locally built image")
    parser.add_argument("--rounds", type=int, default=2, help="paired rounds of the whole-stack migration")
    add_goal_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.image_mb, args.rounds = QUICK_MB, QUICK_IMAGE_MB, 1

    import docker

    from davit.adapters.compose import target as tgt
    from davit.adapters.compose.migrate import WIRE_LEVEL
    from davit.adapters.compose.pipeline import move_item
    from davit.adapters.compose.source import Item
    from davit.adapters.docker.backup import VolumeBackupWork
    from davit.adapters.repository.repository import Repository
    from davit.adapters.repository.tuning import Tuning
    from davit.adapters.runwork import RunInputs
    from davit.adapters.ssh.remote import SshAddress
    from davit.adapters.ssh.remote import connect as ssh_connect
    from davit.domain.jobs import VolumeBackupJob
    from tests.peers.state import load

    state = load()
    dk, sh = state.get("docker", {}), state.get("ssh", {})
    if not (dk.get("ok") and sh.get("ok")):
        raise SystemExit("needs the docker and ssh peers: python -m tests.peers up --only docker,ssh")
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    client = docker.DockerClient(base_url=dk["host"])
    vol = f"davit-bench-{uuid.uuid4().hex[:6]}"
    mp = Path(client.volumes.create(vol).attrs["Mountpoint"])
    try:
        if args.compose_only:
            stack = measure_stack(client, work, dk, sh, fill, measured, args.size_mb, args.image_mb, args.rounds, not args.quick)
            return goals_of({}, args.size_mb, stack, "--compose-only").finish(args.goals_json)
        print(f"filling volume {vol} with {args.size_mb} MB of mixed files; {cpu_count()} CPUs; repository on {disk_of(work)}")
        fill(mp, args.size_mb)
        tuning = Tuning()

        def backup(run_id: str, access: str = "mountpoint") -> Callable[[], None]:
            spec = VolumeBackupJob.model_validate(
                {
                    "name": f"bench-{access}",
                    "kind": "volume.backup",
                    "engine": dk["host"],
                    "source": {"names": [vol]},
                    "access": access,
                    "helper_image": dk["image"],
                }
            )

            def go() -> None:
                repo = Repository.open(work / f"repo-{access}")
                w = VolumeBackupWork(RunInputs(spec, run_id, tuning, repo=repo))
                ctx = MemoryRunContext()
                w.details = w.prepare(ctx)
                w.run(ctx)
                w.finish(ctx)
                for message in ctx.warnings:
                    print(f"  warning: {message}")

            return go

        results: dict[str, tuple[float, float]] = {}
        os.sync()
        results["davit volume backup (cold)"] = measured(backup("b1"))
        results["davit volume backup (repeat)"] = measured(backup("b2"))
        os.sync()
        results["davit helper backup (cold)"] = measured(backup("h1", "helper"))
        results["davit helper backup (repeat)"] = measured(backup("h2", "helper"))
        os.sync()
        results["docker run tar | zstd -T0"] = measured(
            shell(
                f"DOCKER_HOST={shlex.quote(dk['host'])} docker run --rm -v {vol}:/v {shlex.quote(dk['image'])} "
                f"tar c /v | zstd -q -T0 > {work / 'vol.tar.zst'}"
            )
        )
        # The engine's default json-file log driver also writes the whole tar into the
        # container's log: the same pipeline without it is the fairer baseline.
        results[NO_LOG_PIPELINE] = measured(
            shell(
                f"DOCKER_HOST={shlex.quote(dk['host'])} docker run --rm --log-driver none -v {vol}:/v "
                f"{shlex.quote(dk['image'])} tar c /v | zstd -q -T0 > {work / 'vol.tar.zst'}"
            )
        )

        if args.volume_only:
            report_volume(results, args.size_mb)
            return goals_of(results, args.size_mb).finish(args.goals_json)
        address = SshAddress(sh["host"], int(sh["port"]), sh["user"], sh["key_file"], sh["known_hosts"])
        layout = tgt.TargetLayout(str(work / "target"), "bench")

        def migrate(dest: str) -> Callable[[], None]:
            """The migration's data path for one item, as `compose.migrate` runs it: export,
            transfer and import overlapping in one bounded pipeline."""

            def go() -> None:
                item = Item("bind-0", "bind", str(mp), str(work / "target" / dest))
                with ssh_connect(address) as host:
                    present = tgt.present_chunks(host, layout)
                    moved = move_item(
                        host,
                        layout.store,
                        item,
                        tgt.unpacker_for(host, item, sh["image"], "bench"),
                        WIRE_LEVEL,
                        present,
                        set(),
                        lambda _n, _b: None,
                        lambda: None,
                        tgt.walker_for(item, sh["image"]),
                    )
                print(
                    f"  {dest}: {moved.sent_chunks} of {len(set(moved.ids))} chunks sent, "
                    f"{moved.sent_bytes / 1e6:.0f} MB on the wire, "
                    f"{'unpacked' if moved.unpacked else 'nothing written (the target held it)'}"
                )

            return go

        results["davit migration data path (cold)"] = measured(migrate("m1"))
        # the repeat goes where the cold run went, as a retried or resumed migration does
        results["davit migration data path (repeat)"] = measured(migrate("m1"))
        ssh = (
            f"ssh -i {sh['key_file']} -p {sh['port']} -o UserKnownHostsFile={sh['known_hosts']} "
            f"-o StrictHostKeyChecking=yes {sh['user']}@{sh['host']}"
        )
        results[SSH_PIPELINE] = measured(
            shell(
                f"mkdir -p {work / 'target' / 'p1'} && tar c -C {mp} . | zstd -q -T0 | "
                f"{ssh} 'zstd -dq | tar x -C {work / 'target' / 'p1'}'"
            )
        )

        stack = measure_stack(client, work, dk, sh, fill, measured, args.size_mb, args.image_mb, args.rounds, not args.quick)
        report_volume(results, args.size_mb)
        m, mpipe = results["davit migration data path (cold)"][0], results[SSH_PIPELINE][0]
        print(
            f"migration: davit at {mpipe / m:.2f}x the pipeline's speed (goal >= 0.8x); repeated run takes "
            f"{results['davit migration data path (repeat)'][0] / m:.2f}x the cold run's time"
        )
        goals = goals_of(results, args.size_mb, stack)
    finally:
        client.volumes.get(vol).remove(force=True)
        client.close()
        shutil.rmtree(work, ignore_errors=True)
    return goals.finish(args.goals_json)


def goals_of(
    results: dict[str, tuple[float, float]], size_mb: int, stack: StackResult | None = None, only: str = "--volume-only"
) -> Goals:
    goals = Goals("docker", GOALS)
    stack_goals(goals, stack)
    if not results:
        for key in ("volume", "helper", "migrate", "migrate-repeat"):
            goals.skipped(key, only)
        return goals
    pipeline = results[NO_LOG_PIPELINE][0]
    for key, path in (("volume", "volume"), ("helper", "helper")):
        cold = results[f"davit {path} backup (cold)"][0]
        goals.ratio(key, pipeline / cold, f"{cold:.2f} s", f"pipeline {pipeline:.2f} s", f"{size_mb} MB volume")
    if "davit migration data path (cold)" not in results:
        goals.skipped("migrate", only)
        goals.skipped("migrate-repeat", only)
        return goals
    cold, repeat, ssh = (
        results[k][0] for k in ("davit migration data path (cold)", "davit migration data path (repeat)", SSH_PIPELINE)
    )
    goals.ratio("migrate", ssh / cold, f"{cold:.2f} s", f"pipeline {ssh:.2f} s", f"{size_mb} MB")
    goals.ratio("migrate-repeat", repeat / cold, f"{repeat:.2f} s", f"cold run {cold:.2f} s", f"{size_mb} MB")
    return goals


def stack_goals(goals: Goals, stack: StackResult | None) -> None:
    """Issue 21's lines: the median of the paired rounds' ratios, and the repeat's share."""
    if stack is None:
        goals.skipped("stack", "--volume-only")
        goals.skipped("stack-repeat", "--volume-only")
        return
    ordered = sorted(stack.rounds, key=lambda r: r.ratio)
    mid = ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else None
    davit_s = mid.davit_s if mid else statistics.median(r.davit_s for r in stack.rounds)
    base_s = mid.baseline_s if mid else statistics.median(r.baseline_s for r in stack.rounds)
    rounds = ", ".join(f"{r.ratio:.2f}" for r in stack.rounds)
    loads = ", ".join(r.load for r in stack.rounds)
    goals.ratio(
        "stack",
        stack.median,
        f"{davit_s:.2f} s",
        f"pipelines {base_s:.2f} s",
        f"median of {len(stack.rounds)} paired rounds: {rounds}; load by round {loads}; "
        f"{stack.size_mb} MB of data, {stack.image_mb} MB image",
    )
    if stack.repeat_wire is None or stack.repeat_share is None:
        goals.skipped("stack-repeat", "--quick: one migration, so that the smoke run stays small")
        return
    goals.ratio(
        "stack-repeat",
        stack.repeat_share,
        f"{stack.repeat_wire.sent / 1e6:.1f} MB",
        f"cold run {stack.cold_wire.sent / 1e6:.1f} MB",
        f"{100 * stack.repeat_share:.1f}%; repeat {stack.repeat_s or 0:.1f} s; {repeat_note(stack.repeat_steps)}",
        digits=3,
    )


def repeat_note(steps: dict[str, Any]) -> str:
    """What the repeat sent, from its transfer's summary, and why when it was everything."""
    t, images = steps.get("transfer", {}), steps.get("preflight", {}).get("images_to_send", [])
    sent, chunks = int(t.get("chunks_sent", 0)), int(t.get("chunks", 0))
    note = f"{sent} of {chunks} chunks sent, {len(images)} images"
    if chunks and sent == chunks:
        note += "; every chunk again: the target's chunk store (the transfer cache) was not there or not kept"
    return note


if __name__ == "__main__":
    raise SystemExit(main())

"""bench/docker.py's whole-stack measure (issue 21): `compose.migrate` of a compose project with a
locally built image, against `docker save | zstd | ssh 'zstd -d | docker load'` plus
`tar c | zstd | ssh 'zstd -d | tar x'` for its data, and a repeated migration's bytes on the wire.

The stack, made on the docker peer's engine (the source) under a unique `c-bench-<hex>` name:
one service running an image built there from the peer's test image plus two layers of
seeded random bytes (`--image-mb`, 60% incompressible, 40% a repeated 4 KiB block), never
pulled (no registry is reachable); two named volumes and a bind-mounted directory inside the
project holding the bench's mixed files (`--size-mb` in all: 5/8, 1/8 and 2/8). Its target is
the ssh peer's engine (sshd on this machine, the second dockerd as its sessions' DOCKER_HOST).

davit runs `compose.migrate` whole (inspect to finalize: stop, data and image transfer, the
project written, `up -d`, verify, the target's chunk store removed) in process, as
`ComposeMigrateWork` with an in-memory run context (no davitd, no event log), in a forked child
so its peak RSS is its own. The baseline is one shell script: the image's `docker save`
pipeline, then one `tar | zstd -T0 | ssh` pipeline per volume and for the bind directory.
Every SSH connection of both goes through `wirecount.WireCounter`, which counts the bytes on
the wire. Rounds (`--rounds`) pair the two in alternating order (the last round baseline
first) on a cleared target (no project, no image); each round's ratio is baseline seconds /
davit's, the goal line gives their median.

The repeat follows the last round's davit run: the target project is removed as an operator
removes it (containers, network, its volumes and directory; the image stays, as `docker
compose down -v` leaves it), the source started again, and the same migration run again. Its
figure is the bytes it sent on the wire as a share of the cold run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from bench.benchlib import table
from bench.wirecount import Wire, WireCounter

COMPOSE = """\
services:
  app:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    volumes: ["data:/data", "logs:/logs", "./files:/files"]
volumes:
  data: {{}}
  logs: {{}}
"""
Fill = Callable[[Path, int], None]
Measured = Callable[[Callable[[], None]], tuple[float, float]]


@dataclass
class Stack:
    name: str
    dir: Path
    image: str  # its tag
    image_id: str
    source: str  # DOCKER_HOST of the source engine
    target: str  # DOCKER_HOST of the target engine (the ssh peer's sessions')
    data: dict[str, Path] = field(default_factory=dict)  # what moves: name -> its directory on the source

    def compose(self, *args: str) -> None:
        env = {**os.environ, "DOCKER_HOST": self.source}
        done = subprocess.run(
            ["docker", "compose", "-p", self.name, *args], cwd=self.dir, env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise SystemExit(f"docker compose {' '.join(args)} failed: {done.stderr[-2000:]}")


@dataclass
class Round:
    order: str
    davit_s: float
    davit_rss: float
    davit_wire: Wire
    baseline_s: float
    baseline_wire: Wire
    load: str

    @property
    def ratio(self) -> float:
        return self.baseline_s / self.davit_s


@dataclass
class StackResult:
    size_mb: int
    image_mb: int
    rounds: list[Round]
    cold_wire: Wire  # the last davit run (the one a repeat follows)
    repeat_s: float | None = None  # None: no repeat was run (`--quick`)
    repeat_wire: Wire | None = None
    repeat_steps: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(r.ratio for r in self.rounds)

    @property
    def repeat_share(self) -> float | None:
        return None if self.repeat_wire is None else self.repeat_wire.sent / self.cold_wire.sent


def davit_first_by_round(rounds: int) -> list[bool]:
    """Whether davit goes first in each round: alternating, the last round baseline first, so
    that the repeat follows a davit run directly."""
    return [(rounds - 1 - n) % 2 == 1 for n in range(rounds)]


def build_image(client: docker.DockerClient, ctx: Path, base: str, tag: str, megabytes: int) -> str:
    """An image of `base` plus two layers of seeded random bytes: `megabytes` in all."""
    ctx.mkdir(parents=True)
    rnd = random.Random(21)
    random_mb = megabytes * 6 // 10
    with open(ctx / "layer1.bin", "wb") as fh:
        for _ in range(random_mb):
            fh.write(rnd.randbytes(1 << 20))
    with open(ctx / "layer2.bin", "wb") as fh:
        for _ in range(megabytes - random_mb):
            fh.write(rnd.randbytes(4096) * 256)
    for name in ("layer1.bin", "layer2.bin"):
        os.utime(ctx / name, (1_700_000_000, 1_700_000_000))
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY layer1.bin /opt/layer1.bin\nCOPY layer2.bin /opt/layer2.bin\n")
    image, _ = client.images.build(path=str(ctx), tag=tag, rm=True, pull=False)
    shutil.rmtree(ctx)
    return str(image.id)


def make_stack(
    client: docker.DockerClient, work: Path, dk: dict[str, Any], sh: dict[str, Any], fill: Fill, size_mb: int, image_mb: int
) -> Stack:
    name = f"c-bench-{uuid.uuid4().hex[:6]}"
    d = work / "src" / name
    (d / "files").mkdir(parents=True)
    tag = f"{name}/app:1"
    stack = Stack(name, d, tag, "", dk["host"], sh["docker_host"])
    stack.image_id = build_image(client, work / "image-context", dk["image"], tag, image_mb)
    (d / "compose.yaml").write_text(COMPOSE.format(image=tag))
    stack.compose("up", "-d")
    volumes = {key: Path(client.volumes.get(f"{name}_{key}").attrs["Mountpoint"]) for key in ("data", "logs")}
    parts = {"data": size_mb * 5 // 8, "logs": size_mb // 8}
    for key, mb in parts.items():
        fill(volumes[key], mb)
        stack.data[f"volume {key}"] = volumes[key]
    fill(d / "files", size_mb - sum(parts.values()))
    stack.data["bind files"] = d / "files"
    return stack


def remove_project(client: docker.DockerClient, name: str) -> None:
    """Containers, networks and volumes of compose project `name` on one engine."""
    label = f"com.docker.compose.project={name}"
    for c in client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True)
    for n in client.networks.list(filters={"label": label}):
        n.remove()
    for v in client.volumes.list(filters={"label": label}) + client.volumes.list(filters={"name": f"{name}_"}):
        try:
            v.remove(force=True)
        except docker.errors.NotFound:
            pass


def remove_image(client: docker.DockerClient, stack: Stack) -> None:
    for ref in (stack.image, stack.image_id):
        try:
            client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


def listing(root: Path, digests: bool) -> dict[str, tuple[Any, ...]]:
    """Type, size and mode of everything under `root` (and each file's sha256 with `digests`)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink() or p.is_dir():
                out[rel] = ("l" if p.is_symlink() else "d", st.st_mode & 0o7777)
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if digests else ""
            out[rel] = ("f", st.st_mode & 0o7777, st.st_size, digest)
    return out


def _context() -> Any:
    from tests.fakes import MemoryRunContext

    class Recording(MemoryRunContext):
        def __init__(self) -> None:
            super().__init__()
            self.summaries: dict[str, Any] = {}
            self.started: dict[str, float] = {}
            self.seconds: dict[str, float] = {}
            self.current = ""
            self.remote: dict[str, list[float]] = {}  # step -> [commands run on the target, their seconds]
            self.sessions: dict[str, int] = {}  # step -> SSH sessions opened (every channel)
            self.items: list[str] = []  # each item's kind and seconds in the data pipeline

        def step_started(self, step: str, *, commits: bool = False) -> None:
            self.started[step] = time.monotonic()
            self.current = step

        def step_completed(self, step: str, summary: dict[str, Any]) -> None:
            self.summaries[step] = summary
            self.seconds[step] = time.monotonic() - self.started.get(step, time.monotonic())
            super().step_completed(step, summary)

    return Recording()


def count_remote_commands(ctx: Any) -> None:
    """Count each command davit runs on the target over SSH (`RemoteHost.run`: one session
    each), and its seconds, under the step running (`ctx.current`); in the forked child only."""
    from davit.adapters.ssh.remote import RemoteHost

    plain = RemoteHost.run

    def run(self: RemoteHost, command: str, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return plain(self, command, **kwargs)
        finally:
            entry = ctx.remote.setdefault(ctx.current or "-", [0, 0.0])
            entry[0] += 1
            entry[1] += time.monotonic() - start

    RemoteHost.run = run  # type: ignore[method-assign]

    # every SSH session (channel) opened, whatever opens it: `run`, a pipeline's processes, batches
    import asyncssh

    opened = asyncssh.SSHClientConnection.create_session

    async def create_session(self: Any, *args: Any, **kwargs: Any) -> Any:
        ctx.sessions[ctx.current or "-"] = ctx.sessions.get(ctx.current or "-", 0) + 1
        return await opened(self, *args, **kwargs)

    asyncssh.SSHClientConnection.create_session = create_session  # type: ignore[method-assign]

    # each item's pass through the data pipeline, timed (volume, bind, image)
    from davit.adapters.compose import migrate

    moving = migrate.move_item

    def move_item(host: Any, store: str, item: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return moving(host, store, item, *args, **kwargs)
        finally:
            ctx.items.append(f"{item.kind} {time.monotonic() - start:.1f}")

    migrate.move_item = move_item  # type: ignore[assignment]


DavitRun = tuple[float, float, Wire, dict[str, Any]]  # seconds, peak RSS MB, wire, step summaries


class StackBench:
    """One stack on the source engine, its target, the wire counter, the contenders."""

    def __init__(
        self, client: docker.DockerClient, work: Path, dk: dict[str, Any], sh: dict[str, Any], measured: Measured
    ) -> None:
        self.client, self.work, self.sh, self.measured = client, work, sh, measured
        self.target_client = docker.DockerClient(base_url=sh["docker_host"])
        self.wire = WireCounter(sh["host"], int(sh["port"]))
        # the pass-through's port is another host key entry: the peer's key, under that port
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(
            Path(sh["known_hosts"]).read_text().replace(f"[{sh['host']}]:{sh['port']}", f"[127.0.0.1]:{self.wire.port}")
        )
        self.base, self.baseline_dir = work / "target", work / "baseline"
        self.stack: Stack | None = None
        self.digests = False  # sha256 of every file moved, not only sizes and modes (small sizes)

    def close(self) -> None:
        self.wire.close()
        if self.stack is not None:
            remove_project(self.client, self.stack.name)
            remove_project(self.target_client, self.stack.name)
            for c in (self.client, self.target_client):
                remove_image(c, self.stack)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.baseline_dir, ignore_errors=True)
        self.target_client.close()

    @property
    def src(self) -> Stack:
        assert self.stack is not None
        return self.stack

    def spec(self) -> Any:
        from davit.domain.jobs import ComposeMigrateJob

        return ComposeMigrateJob.model_validate(
            {
                "name": "c-bench",
                "kind": "compose.migrate",
                "verify_timeout": 120,
                "stop_timeout": 10,
                "source": {"project": self.src.name, "engine": self.src.source},
                "target": {
                    "host": "127.0.0.1",
                    "port": self.wire.port,
                    "user": self.sh["user"],
                    "key_file": self.sh["key_file"],
                    "known_hosts": str(self.known_hosts),
                    "base_path": str(self.base),
                    "helper_image": self.sh["image"],
                },
            }
        )

    def migrate(self, run_id: str) -> Callable[[], None]:
        """compose.migrate whole, in process (to run in `measured`'s forked child)."""
        from davit.adapters.compose.migrate import ComposeMigrateWork
        from davit.adapters.repository.repository import Repository
        from davit.adapters.repository.tuning import Tuning
        from davit.adapters.runwork import RunInputs

        spec, out = self.spec(), self.work / f"{run_id}.json"

        def go() -> None:
            ctx = _context()
            count_remote_commands(ctx)
            w = ComposeMigrateWork(RunInputs(spec, run_id, Tuning(), repo=Repository.open(self.work / f"repo-{run_id}")))
            w.details = w.prepare(ctx)
            w.run(ctx)
            w.finish(ctx)
            out.write_text(
                json.dumps(
                    {
                        "steps": ctx.summaries,
                        "seconds": ctx.seconds,
                        "remote": ctx.remote,
                        "sessions": ctx.sessions,
                        "items": ctx.items,
                        "warnings": ctx.warnings,
                    }
                )
            )

        return go

    def baseline_script(self) -> str:
        ssh = (
            f"ssh -i {shlex.quote(self.sh['key_file'])} -p {self.wire.port} "
            f"-o UserKnownHostsFile={shlex.quote(str(self.known_hosts))} "
            f"-o StrictHostKeyChecking=yes -o BatchMode=yes {self.sh['user']}@127.0.0.1"
        )
        lines = [
            f"DOCKER_HOST={shlex.quote(self.src.source)} docker save {shlex.quote(self.src.image)} | zstd -q -T0 | "
            f"{ssh} 'zstd -dq | docker load -q' >/dev/null"
        ]
        for n, path in enumerate(self.src.data.values()):
            to = shlex.quote(str(self.baseline_dir / f"d{n}"))
            remote = shlex.quote(f"mkdir -p {to} && zstd -dq | tar x -C {to}")
            lines.append(f"tar c -C {shlex.quote(str(path))} . | zstd -q -T0 | {ssh} {remote}")
        return "set -e -o pipefail\n" + "\n".join(lines)

    def clear_target(self, image_too: bool, cache_too: bool = True) -> None:
        remove_project(self.target_client, self.src.name)
        shutil.rmtree(self.base / self.src.name, ignore_errors=True)
        if cache_too:  # a cold round starts without davit's transfer cache; the repeat keeps it, as `down -v` does
            shutil.rmtree(self.base / ".davit" / self.src.name, ignore_errors=True)
        shutil.rmtree(self.baseline_dir, ignore_errors=True)
        if image_too:
            remove_image(self.target_client, self.src)

    def run_davit(self, run_id: str) -> DavitRun:
        self.src.compose("start")  # a running stack is what is migrated
        os.sync()
        before = self.wire.totals()
        secs, rss = self.measured(self.migrate(run_id))
        used = self.wire.totals() - before
        recorded = json.loads((self.work / f"{run_id}.json").read_text())
        by_step = ", ".join(f"{k} {v:.1f}" for k, v in recorded["seconds"].items())
        remote = ", ".join(f"{k} {n:.0f} in {t:.1f} s" for k, (n, t) in recorded["remote"].items())
        print(f"  davit {run_id}: {secs:.1f} s; seconds by step: {by_step}", flush=True)
        print(f"    commands run on the target (each an SSH session) by step: {remote}", flush=True)
        sessions = recorded.get("sessions", {})
        by_session = ", ".join(f"{k} {n}" for k, n in sessions.items())
        print(f"    SSH sessions opened by step (every channel): {sum(sessions.values())}: {by_session}", flush=True)
        print(f"    seconds by item in the data pipeline: {', '.join(recorded.get('items', []))}", flush=True)
        self.check_image(run_id)
        for what, path in self.src.data.items():
            kind, key = what.split()
            there = (
                Path(self.target_client.volumes.get(f"{self.src.name}_{key}").attrs["Mountpoint"])
                if kind == "volume"
                else self.base / self.src.name / key
            )
            if listing(there, self.digests) != listing(path, self.digests):
                raise SystemExit(f"davit {run_id}: the target's {what} differs from the source's")
        return secs, rss, used, dict(recorded["steps"])

    def check_image(self, who: str) -> None:
        if self.target_client.images.get(self.src.image).id != self.src.image_id:
            raise SystemExit(f"{who}: the target's {self.src.image} is not the source's image {self.src.image_id}")

    def run_baseline(self, n: int) -> tuple[float, Wire]:
        os.sync()
        before = self.wire.totals()
        secs, _rss = self.measured(shell_script(self.baseline_script()))
        used = self.wire.totals() - before
        self.check_image(f"baseline {n}")
        for k, path in enumerate(self.src.data.values()):
            if listing(self.baseline_dir / f"d{k}", False) != listing(path, False):
                raise SystemExit(f"baseline {n}: {path} arrived different")
        return secs, used

    def round(self, n: int, davit_first: bool) -> tuple[Round, DavitRun]:
        """davit and the pipelines, each on a cleared target (no project, no image)."""
        start_load = os.getloadavg()[0]
        cold: DavitRun | None = None
        baseline: tuple[float, Wire] | None = None
        for who in ("davit", "baseline") if davit_first else ("baseline", "davit"):
            self.clear_target(image_too=True)
            if who == "davit":
                cold = self.run_davit(f"cold{n}")
            else:
                baseline = self.run_baseline(n)
        assert cold is not None and baseline is not None
        order = "davit, baseline" if davit_first else "baseline, davit"
        load = f"{start_load:.1f}-{os.getloadavg()[0]:.1f}"
        r = Round(order, cold[0], cold[1], cold[2], baseline[0], baseline[1], load)
        print(
            f"  round {n + 1} ({r.order}; load {r.load}): davit {r.davit_s:.1f} s, {r.davit_wire.sent / 1e6:.0f} MB sent; "
            f"baseline {r.baseline_s:.1f} s, {r.baseline_wire.sent / 1e6:.0f} MB sent; ratio {r.ratio:.2f}x",
            flush=True,
        )
        return r, cold


def measure_stack(
    client: docker.DockerClient,
    work: Path,
    dk: dict[str, Any],
    sh: dict[str, Any],
    fill: Fill,
    measured: Measured,
    size_mb: int,
    image_mb: int,
    rounds: int,
    repeat: bool = True,
) -> StackResult:
    """Build the stack, run the rounds and the repeat, clean everything up; the figures."""
    bench = StackBench(client, work, dk, sh, measured)
    bench.digests = size_mb <= 64
    try:
        print(f"\nbuilding the compose stack: {image_mb} MB image, {size_mb} MB of data in 2 volumes and a bind directory")
        bench.stack = make_stack(client, work, dk, sh, fill, size_mb, image_mb)
        done: list[Round] = []
        cold: DavitRun | None = None
        for n, davit_first in enumerate(davit_first_by_round(rounds)):
            r, cold = bench.round(n, davit_first)
            done.append(r)
        assert cold is not None
        result = StackResult(size_mb, image_mb, done, cold[2])
        if repeat:
            # the target's project removed as an operator does (`down -v`: the image stays)
            bench.clear_target(image_too=False, cache_too=False)
            result.repeat_s, _rss, result.repeat_wire, result.repeat_steps = bench.run_davit("repeat")
        report(result, cold[3])
        return result
    finally:
        bench.close()


def shell_script(script: str) -> Callable[[], None]:
    def go() -> None:
        subprocess.run(["bash", "-c", script], check=True)

    return go


def report(result: StackResult, cold_steps: dict[str, Any]) -> None:
    rows = [
        [
            f"round {n + 1}: {r.order}",
            f"{r.davit_s:.1f}",
            f"{r.davit_wire.sent / 1e6:.0f}",
            f"{r.davit_rss:.0f}",
            f"{r.baseline_s:.1f}",
            f"{r.baseline_wire.sent / 1e6:.0f}",
            f"{r.ratio:.2f}",
            r.load,
        ]
        for n, r in enumerate(result.rounds)
    ]
    print(
        table(
            [
                "compose stack",
                "davit s",
                "davit MB sent",
                "davit RSS MB",
                "baseline s",
                "baseline MB sent",
                "ratio",
                "load 1 min",
            ],
            rows,
            f"\ncompose.migrate of a {result.size_mb} MB stack with a {result.image_mb} MB image (davit in process, forked)",
        )
    )
    for label, steps in (("cold (last round)", cold_steps), ("repeat", result.repeat_steps)):
        if not steps:
            continue
        t = steps.get("transfer", {})
        images = steps.get("preflight", {}).get("images_to_send", [])
        print(
            f"{label}: {t.get('chunks_sent', 0)} of {t.get('chunks', 0)} chunks sent, "
            f"{t.get('bytes_sent', 0) / 1e6:.0f} MB of chunks; images sent: {len(images)} "
            f"({sum(int(i['bytes']) for i in images) / 1e6:.0f} MB before compression)"
        )
    if result.repeat_wire is not None and result.repeat_share is not None:
        print(
            f"repeat (target project removed, image kept): {result.repeat_s:.1f} s, "
            f"{result.repeat_wire.sent / 1e6:.1f} MB sent on the wire against the cold run's "
            f"{result.cold_wire.sent / 1e6:.1f} MB ({100 * result.repeat_share:.1f}%)"
        )

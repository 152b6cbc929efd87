"""The process that sends a notification, seen from outside while it waits on a hung service:
it runs at a lower priority than davitd (a thousand failing jobs' messages, at half a second
of CPU each, must not take the cores from the runs), and another user's `ps` (its argv) or
its environment show no part of the target's URL."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from davit.daemon.notifications.child import NICENESS as CHILD_NICENESS
from davit.daemon.notifications.sender import deliver
from davit.daemon.notifications.targets import ResolvedTarget
from tests.fixtures.notify_targets import hung_target

__all__ = ["hung_target"]  # fixture
TOKEN = "HungTok3nInThePath"


def children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def niceness(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5), after "pid (comm)"


def test_the_sending_process_runs_below_davitds_priority_and_shows_no_token(hung_target: int) -> None:
    target = ResolvedTarget("slow", (f"json://127.0.0.1:{hung_target}/hook/{TOKEN}",))
    seen: dict[int, tuple[int, bytes, bytes]] = {}

    async def go() -> str | None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    for pid in children():
                        try:
                            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                            if b"notifications.child" in cmdline:
                                seen[pid] = (niceness(pid), cmdline, Path(f"/proc/{pid}/environ").read_bytes())
                        except OSError:
                            pass
                    await anyio.sleep(0.1)

            tg.start_soon(watch)
            reason = await deliver(target, "davit: job docs failed", "body", True, 3.0)
            tg.cancel_scope.cancel()
        return reason

    reason = anyio.run(go)
    assert reason is not None and TOKEN not in reason
    assert seen, "the sending process was never seen"
    own = os.nice(0)
    for nice, cmdline, environ in seen.values():
        assert nice >= min(own + CHILD_NICENESS, 19)
        assert TOKEN.encode() not in cmdline and TOKEN.encode() not in environ

"""A notification target's `urls_file` that is hostile. A FIFO (a job file's `[notify]` may name any path)
whose writer sends a byte and then holds it open: davitd's event loop, which runs every run,
the scheduler and the heartbeat, goes on while the attempt waits, and the attempt ends with a
failure naming the file, recorded in the log, instead of waiting on it for good."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from davit.adapters.secrets import PIPE_WAIT_SECONDS
from davit.daemon.config import load_settings
from davit.daemon.notifications.service import NotificationService
from davit.daemon.scheduler import SystemClock
from davit.domain import events as ev
from davit.domain.notifications import Delivery, Message, log_unwritable
from davit.domain.notifyspec import NotifyEvent
from davit.eventstore.sqlite import SqliteEventStore
from tests.fixtures.notify_targets import Webhook, webhook

__all__ = ["webhook"]  # fixture

HELD_SECONDS = PIPE_WAIT_SECONDS * 2  # the writer's hold: longer than any wait davitd may make


@pytest.fixture
def held_fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO whose writer sends one byte, then keeps it open for `HELD_SECONDS` without more."""
    fifo = tmp_path / "ops.urls"
    os.mkfifo(fifo)
    release = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, b"j")
        release.wait(HELD_SECONDS)
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    yield fifo
    release.set()
    thread.join()


def test_a_fifo_held_open_as_urls_file_neither_stalls_davitd_nor_hangs_the_attempt(tmp_path: Path, held_fifo: Path) -> None:
    (tmp_path / "davit.toml").write_text('[notifications.targets.ops]\nurls_file = "ops.urls"\n')
    settings = load_settings(home=tmp_path)
    gaps: list[float] = []

    async def go() -> tuple[float, list[ev.StoredEvent]]:
        async with SqliteEventStore(tmp_path / "davit.db") as store:
            service = NotificationService(store, lambda: settings, {}, lambda: [], SystemClock())
            delivery = Delivery(log_unwritable("disk full", "2024-01-01T00:00:00+00:00"), "ops")
            done = anyio.Event()

            async def loop_alive() -> None:  # a tick every 50 ms, as long as the loop runs
                last = time.monotonic()
                while not done.is_set():
                    await anyio.sleep(0.05)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(loop_alive)
                await anyio.sleep(0.2)  # (the ticks have begun)
                await service._attempt(delivery)
                done.set()
            return time.monotonic() - started, await store.read_stream(ev.NOTIFICATIONS_STREAM)

    took, records = anyio.run(go)
    assert max(gaps) < 2.0, f"davitd's event loop stood still for {max(gaps):.1f} s"
    assert took < HELD_SECONDS - 2
    [record] = records
    assert record.type == ev.NotificationFailed.type_name()
    assert str(held_fifo) in record.data["reason"]


def test_a_job_whose_urls_file_holds_a_nul_byte_fails_its_own_delivery_and_no_other(tmp_path: Path, webhook: Webhook) -> None:
    """A job file's `[notify]` with a NUL byte in `urls_file` (TOML allows `\\u0000`): that job's
    delivery fails, recorded with a reason; the other targets go on hearing of every job."""
    (tmp_path / "ops.urls").write_text(webhook.url("OpsTok3n") + "\n")
    (tmp_path / "davit.toml").write_text('[notifications.targets.ops]\nurls_file = "ops.urls"\n')
    settings = load_settings(home=tmp_path)
    hostile = Message(
        "run_failed:r1", NotifyEvent.RUN_FAILED, "davit: job evil failed", "b", "evil", "r1", {"urls_file": "/tmp/x\x00y"}
    )
    plain = Message("run_failed:r2", NotifyEvent.RUN_FAILED, "davit: job docs failed", "b", "docs", "r2", None)

    async def go() -> list[ev.StoredEvent]:
        async with SqliteEventStore(tmp_path / "davit.db") as store:
            service = NotificationService(store, lambda: settings, {}, lambda: [], SystemClock())
            async with anyio.create_task_group() as tg:
                tg.start_soon(service.run)
                await anyio.sleep(0.5)
                service._owe([hostile])
                await anyio.sleep(0.5)
                service._owe([plain])
                with anyio.fail_after(60):
                    while len(await store.read_stream(ev.NOTIFICATIONS_STREAM)) < 2:
                        await anyio.sleep(0.2)
                tg.cancel_scope.cancel()
            return await store.read_stream(ev.NOTIFICATIONS_STREAM)

    records = {(r.data["target"], r.type): r.data for r in anyio.run(go)}
    assert ("ops", ev.NotificationSent.type_name()) in records
    failed = records[("job:evil", ev.NotificationFailed.type_name())]
    assert "NUL" in failed["reason"]
    assert [body["title"] for _path, body in webhook.posts] == ["davit: job docs failed"]

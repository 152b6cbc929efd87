"""compose.migrate's side lane (`sidelane.py`): items moved in a thread of their own, on a
connection of their own, with everything the run records done in the run's thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from davit.adapters.compose.pipeline import Moved
from davit.adapters.compose.sidelane import LaneStopped, SideLane
from davit.adapters.compose.source import Item


class Host:
    """Stands in for the lane's SSH connection: whether it was opened, and closed."""

    def __init__(self) -> None:
        self.open = False
        self.closed = False


def connector(host: Host) -> Callable[[], Any]:
    @contextmanager
    def connect() -> Iterator[Any]:
        host.open = True
        try:
            yield host
        finally:
            host.closed = True

    return connect


def items(n: int) -> list[Item]:
    return [Item(f"image-{k}", "image", f"sha256:{k}", f"img{k}") for k in range(n)]


def test_items_move_in_another_thread_and_are_recorded_in_the_callers_thread() -> None:
    host, caller = Host(), threading.get_ident()
    moved_in: list[int] = []

    def move(on: Any, item: Item, stored: Callable[[int, int], None], stop: Callable[[], None]) -> Moved:
        assert on is host
        moved_in.append(threading.get_ident())
        stored(1, 10)
        stored(2, 5)
        return Moved(ids=[item.id], plain_bytes=100)

    recorded: list[tuple[str, int]] = []
    stored_seen: list[tuple[int, int, int]] = []
    lane = SideLane(connector(host), move, items(2)).start()
    try:
        lane.wait(
            lambda: None,
            lambda n, b: stored_seen.append((n, b, threading.get_ident())),
            lambda item, m: recorded.append((item.id, threading.get_ident())),
        )
    finally:
        lane.close()
    assert moved_in and all(t != caller for t in moved_in)
    assert recorded == [("image-0", caller), ("image-1", caller)]
    assert [(n, b) for n, b, _ in stored_seen] == [(1, 10), (2, 5)] * 2
    assert all(t == caller for _, _, t in stored_seen)
    assert host.open and host.closed


def test_the_lanes_error_is_raised_by_wait_after_what_it_finished_is_recorded() -> None:
    def move(on: Any, item: Item, stored: Callable[[int, int], None], stop: Callable[[], None]) -> Moved:
        if item.id == "image-1":
            raise RuntimeError("the target's load failed")
        return Moved(ids=[item.id])

    recorded: list[str] = []
    lane = SideLane(connector(Host()), move, items(3)).start()
    with pytest.raises(RuntimeError, match="load failed"):
        lane.wait(lambda: None, lambda n, b: None, lambda item, m: recorded.append(item.id))
    lane.close()
    assert recorded == ["image-0"]  # the third item was never started


def test_a_stop_in_the_callers_thread_stops_the_lane_at_its_next_check() -> None:
    host = Host()
    checks = threading.Event()

    def move(on: Any, item: Item, stored: Callable[[int, int], None], stop: Callable[[], None]) -> Moved:
        while True:  # a transfer checking between its chunks, which would never end by itself
            checks.set()
            stop()
            time.sleep(0.01)

    class Cancelled(Exception):
        pass

    def check_stop() -> None:
        if checks.is_set():
            raise Cancelled()

    lane = SideLane(connector(host), move, items(1)).start()
    with pytest.raises(Cancelled):
        lane.wait(check_stop, lambda n, b: None, lambda item, m: None)
    started = time.monotonic()
    lane.close()
    assert time.monotonic() - started < 5
    assert isinstance(lane.error, LaneStopped)
    assert host.closed  # its connection is closed once the lane stopped


class Ctx:
    """The run's context as `_move_items` uses it: only its stop check."""

    def check_stop(self) -> None:
        pass


def test_a_lane_that_fails_stops_the_volumes_moving_in_the_runs_thread() -> None:
    """An image whose load failed in its lane stopped the run's own item only once that item
    (a large volume, any number of them) had gone through whole: `wait` alone raised the lane's
    error, after every volume. The run's thread stops at its next chunk once a lane failed."""
    from davit.adapters.compose import images as imgs
    from davit.adapters.compose.migrate import ComposeMigrateWork

    class Work:
        def _connect(self) -> Any:
            return connector(Host())()

    volume_chunks: list[int] = []

    def move(on: Any, item: Item, sent: set[str], stored: Callable[[int, int], None], stop: Callable[[], None]) -> Moved:
        if isinstance(item, imgs.ImageItem):
            raise RuntimeError("the target's docker load failed")
        for n in range(400):  # a volume of many chunks, the stop checked before each
            stop()
            volume_chunks.append(n)
            time.sleep(0.01)
        return Moved(ids=[item.id])

    image = imgs.ImageItem("image-0", "image", "sha256:0", "img0")
    volume = Item("volume-0", "volume", "/src", "vol0")
    recorded: list[str] = []
    with pytest.raises(RuntimeError, match="docker load failed"):
        ComposeMigrateWork._move_items(
            Work(),  # type: ignore[arg-type]
            Ctx(),  # type: ignore[arg-type]
            Host(),  # type: ignore[arg-type]
            [volume, image],
            set(),
            move,
            lambda n, b: None,
            lambda item, m: recorded.append(item.id),
            None,
        )
    assert len(volume_chunks) < 100, "the volume went on after its side lane failed"
    assert recorded == []

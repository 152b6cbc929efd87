"""A local user floods davitd's metrics listener (it is on loopback, open to every user of the
host) with connections that send nothing: davitd does not start a thread for each of them nor
keep them for good (at systemd's task limit no run could start a thread), and once the flood
stops, a scrape is answered again."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from davit.daemon.metrics import Metrics
from davit.daemon.metricsconfig import MetricsSection
from davit.daemon.metricsserver import IDLE_SECONDS, MAX_CONNECTIONS
from davit.eventstore.sqlite import SqliteEventStore
from tests.peers.ports import free_port

FLOOD = 100


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[Metrics, int]]:
    port = free_port()
    store = SqliteEventStore(tmp_path / "davit.db")
    metrics = Metrics(MetricsSection(listen=f"127.0.0.1:{port}"), store, "test")
    metrics.listen()
    yield metrics, port
    metrics.close()


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return bytes(response.read())


def test_idle_connections_by_the_hundred_neither_add_a_thread_each_nor_stay_open(
    listening: tuple[Metrics, int], capfd: pytest.CaptureFixture[str]
) -> None:
    _metrics, port = listening
    assert b"davit_up 1.0" in scrape(port)
    before = threading.active_count()
    flood = [socket.create_connection(("127.0.0.1", port), timeout=IDLE_SECONDS * 3) for _ in range(FLOOD)]
    try:
        time.sleep(1.0)
        assert threading.active_count() - before <= MAX_CONNECTIONS
        # every connection of the flood is closed by davitd: at once beyond the bound, after
        # IDLE_SECONDS for those it took (recv returns b"" at the close; a timeout fails the test)
        started = time.monotonic()
        for sock in flood:
            assert sock.recv(1) == b""
        assert time.monotonic() - started < IDLE_SECONDS * 2
    finally:
        for sock in flood:
            sock.close()
    anyio.run(anyio.sleep, 0.5)
    assert threading.active_count() <= before
    assert b"davit_up 1.0" in scrape(port)
    # the connections that timed out are no traceback each on davitd's stderr (the journal)
    assert "Traceback" not in capfd.readouterr().err

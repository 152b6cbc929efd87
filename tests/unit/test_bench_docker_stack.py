"""bench/docker.py's whole-stack measure (issue 21): its bytes-on-the-wire counter counts what
really crosses a TCP connection, the rounds alternate with a davit run last (the repeat follows
it), and its goal lines say what was measured.

Regression: a goal limit of 0.02x was printed as `< 0.0x` (one decimal for every ratio goal)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.benchlib import Goals, Spec  # noqa: E402
from bench.dockerstack import Round, StackResult, davit_first_by_round  # noqa: E402
from bench.wirecount import Wire, WireCounter  # noqa: E402


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP server that answers each connection with its input doubled, then closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                got = b""
                while block := conn.recv(1 << 16):
                    got += block
                conn.sendall(got * 2)

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        back = b""
        while block := conn.recv(1 << 16):
            back += block
    return back


def test_the_wire_counter_forwards_and_counts_every_byte_both_ways(echo_server: int) -> None:
    counter = WireCounter("127.0.0.1", echo_server)
    try:
        first, second = os.urandom(3 << 20) + b"x", os.urandom(12345)
        assert exchange(counter.port, first) == first * 2
        after_one = counter.totals()
        assert after_one == Wire(len(first), 2 * len(first))
        assert exchange(counter.port, second) == second * 2
        assert counter.totals() - after_one == Wire(len(second), 2 * len(second))
    finally:
        counter.close()


def test_rounds_alternate_and_the_last_one_ends_with_davit() -> None:
    assert davit_first_by_round(1) == [False]
    assert davit_first_by_round(2) == [True, False]
    assert davit_first_by_round(3) == [False, True, False]


def test_a_limit_with_two_decimals_is_printed_with_them() -> None:
    assert Spec("m", "<", 0.02, "x", 21).text == "< 0.02x"
    assert Spec("m", ">=", 0.8, "x", 21).text == ">= 0.8x"  # the other goals' lines as before
    assert Spec("m", "<", 2, "%", 21).text == "< 2%"


def stack_result(ratios: list[tuple[float, float]], repeat_sent: int | None) -> StackResult:
    rounds = [Round("davit, baseline", d, 100.0, Wire(900, 9), b, Wire(800, 8), "1.0-2.0") for d, b in ratios]
    result = StackResult(1024, 200, rounds, cold_wire=Wire(1000, 10))
    if repeat_sent is not None:
        result.repeat_s, result.repeat_wire = 5.0, Wire(repeat_sent, 1)
        result.repeat_steps = {"transfer": {"chunks_sent": 3 if repeat_sent > 100 else 0, "chunks": 3}}
    return result


def test_the_goal_lines_give_the_median_round_and_the_repeat_share() -> None:
    import bench.docker as docker_bench

    goals = Goals("docker", docker_bench.GOALS)
    docker_bench.stack_goals(goals, stack_result([(10.0, 9.0), (20.0, 10.0), (10.0, 5.0)], repeat_sent=15))
    stack, repeat = goals.lines["stack"], goals.lines["stack-repeat"]
    assert (stack.ratio, stack.verdict, stack.davit, stack.baseline) == ("0.50x", "missed", "10.00 s", "pipelines 5.00 s")
    assert "median of 3 paired rounds: 0.90, 0.50, 0.50" in stack.note
    assert (repeat.ratio, repeat.verdict, repeat.goal) == ("0.015x", "met", "< 0.02x")
    assert "0 of 3 chunks sent" in repeat.note and "every chunk again" not in repeat.note

    goals = Goals("docker", docker_bench.GOALS)
    docker_bench.stack_goals(goals, stack_result([(10.0, 9.0)], repeat_sent=840))
    assert (goals.lines["stack"].verdict, goals.lines["stack-repeat"].verdict) == ("met", "missed")
    assert "3 of 3 chunks sent, 0 images; every chunk again" in goals.lines["stack-repeat"].note

    goals = Goals("docker", docker_bench.GOALS)
    docker_bench.stack_goals(goals, stack_result([(10.0, 9.0)], repeat_sent=None))
    assert goals.lines["stack-repeat"].verdict == "skipped"

"""Fixtures the compose adapter tests share: both peers' engines, and the migrate tests' stack
(`stack.make_stack`) running on the source engine, removed from both engines afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.compose.stack import Stack, cleanup, make_stack
from tests.peers.state import DockerPeer, SshPeer


@pytest.fixture
def stack(docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path) -> Iterator[Stack]:
    made = make_stack(tmp_path, docker_peer, ssh_peer)
    yield made
    cleanup(made, tmp_path / "target")

"""`images.target_chains` when the target's images change under it: an image listed by `docker
image ls` and removed before `docker image inspect` read it (another stack's `image rm`, a prune:
seen on the shared test engine) is not an error, and the layers of the others still count.
Any other failure of the command still fails the migration's pre-flight."""

from __future__ import annotations

from typing import Any

import pytest

from davit.adapters.compose.images import chain_ids, target_chains
from davit.adapters.ssh.remote import RemoteCommandFailed, Result

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Host:
    """Answers the one command `target_chains` runs, as a target's shell would."""

    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.result = Result(status, stdout, stderr)
        self.address = type("Address", (), {"where": "root@target:22"})()

    def run(self, command: str, **_kw: Any) -> Result:
        assert "docker image inspect" in command
        return self.result


def test_an_image_removed_between_listing_and_inspection_leaves_the_others_layers() -> None:
    gone = "Error response from daemon: no such image: sha256:57c0: No such image: sha256:57c0\n"
    chains = target_chains(Host(1, f"{A} {B} \n", gone))  # type: ignore[arg-type]
    assert chains == set(chain_ids([A, B]))


def test_another_failure_of_the_inspection_still_fails() -> None:
    with pytest.raises(RemoteCommandFailed, match="Cannot connect to the Docker daemon"):
        target_chains(Host(1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock\n"))  # type: ignore[arg-type]

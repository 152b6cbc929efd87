"""The compose.migrate job the e2e tests drop into davitd's jobs directory: the stack's project
on the docker peer's engine, moved to the engine behind the ssh peer."""

from __future__ import annotations

from pathlib import Path

from tests.integration.compose.stack import Stack
from tests.peers.state import SshPeer


def migrate_job_text(stack: Stack, ssh_peer: SshPeer, base: Path, verify_timeout: int = 60, extra: str = "") -> str:
    """`extra`: lines of top-level keys (options, a schedule) placed before the tables."""
    return f"""name = "move"
kind = "compose.migrate"
verify_timeout = {verify_timeout}
stop_timeout = 1
{extra}
[source]
project = "{stack.name}"
engine = "{stack.source_host}"
[target]
host = "{ssh_peer.host}"
port = {ssh_peer.port}
user = "{ssh_peer.user}"
key_file = "{ssh_peer.key_file}"
known_hosts = "{ssh_peer.known_hosts}"
base_path = "{base}"
helper_image = "{ssh_peer.image}"
"""

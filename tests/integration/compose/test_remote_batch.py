"""`remotebatch.run_batch` against the real sshd: commands side by side in one session, each
with its own status, stdout and stderr, whatever they print."""

from __future__ import annotations

import uuid

import pytest

from davit.adapters.compose.remotebatch import run_batch
from davit.adapters.ssh.remote import SshAddress, connect
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def meet(mine: str, other: str) -> str:
    """Mark `mine`, then wait (30 s at most) for `other`: both succeed only when they run at once."""
    return (
        f"touch {mine}; i=0; while [ ! -e {other} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; [ -e {other} ] && echo met"
    )


def test_each_command_gets_its_own_status_and_output_however_it_prints(ssh_peer: SshPeer) -> None:
    mark = f"/tmp/davit-batch-c-speed-{uuid.uuid4().hex}"
    address = SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)
    commands = {
        "fails": "echo out; echo err >&2; exit 3",
        "header_like": "printf '0 0 5 0\\n1 0 0 0\\nno final newline'",
        "binary": "head -c 3000 /dev/zero | tr '\\0' '\\377'",
        "empty": "true",
        "reads_nothing": "cat",  # stdin is /dev/null: it ends at once
        "one": meet(f"{mark}.one", f"{mark}.two"),
        "two": meet(f"{mark}.two", f"{mark}.one"),
    }
    with connect(address) as host:
        try:
            got = run_batch(host, commands)
        finally:
            host.run(f"rm -f {mark}.one {mark}.two")
    assert list(got) == list(commands)
    assert (got["fails"].status, got["fails"].stdout, got["fails"].stderr) == (3, "out\n", "err\n")
    assert got["header_like"].stdout == "0 0 5 0\n1 0 0 0\nno final newline" and got["header_like"].status == 0
    assert got["binary"].stdout == "\ufffd" * 3000
    assert (got["empty"].stdout, got["empty"].stderr, got["reads_nothing"].stdout) == ("", "", "")
    # each waited for the other: they ran side by side
    assert (got["one"].status, got["one"].stdout, got["two"].status, got["two"].stdout) == (0, "met\n", 0, "met\n")

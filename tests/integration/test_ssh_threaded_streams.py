"""`ssh/threaded.py`'s `RemoteProcess` against the sshd peer: a command's output is read whole,
however slowly its reader takes it, and its stderr and exit status are there after it ended.

Regression: the process's end was awaited with asyncssh's `wait`, which lifts the channel's
flow control and, once the command ends, takes the output not yet read: a reader that was
behind (an SSH source's export whose chunks are sealed slower than they arrive) lost the
stream's tail, and the stderr a failed export printed."""

from __future__ import annotations

import hashlib
import time

import pytest

from davit.adapters.ssh.remote import SshAddress
from davit.adapters.ssh.threaded import connect_threaded
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]
MIB = 1 << 20


def address(ssh_peer: SshPeer) -> SshAddress:
    return SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)


def test_output_read_after_the_command_ended_is_whole(ssh_peer: SshPeer) -> None:
    with connect_threaded(address(ssh_peer)) as host:
        expected = host.run("head -c 6291456 /dev/zero | tr '\\0' 'k' | sha256sum").stdout.split()[0]
        proc = host.popen("head -c 6291456 /dev/zero | tr '\\0' 'k'; echo done >&2; exit 3")
        first = proc.stdout.read(MIB)
        time.sleep(1.5)  # the reader falls behind: the command could end meanwhile
        rest = []
        while piece := proc.stdout.read(MIB):
            rest.append(piece)
        data = first + b"".join(rest)
        assert len(data) == 6 * MIB
        assert hashlib.sha256(data).hexdigest() == expected
        assert proc.wait() == 3
        assert proc.stderr.read() == b"done\n"


def test_a_reader_that_stops_reading_holds_the_command_back(ssh_peer: SshPeer) -> None:
    # flow control: the command cannot write more than the channel's window ahead of the reader
    with connect_threaded(address(ssh_peer)) as host:
        proc = host.popen("head -c 67108864 /dev/zero")
        proc.stdout.read(MIB)
        time.sleep(2)
        assert proc.poll() is None, "the whole output was taken in while nobody read it"
        proc.kill()
        proc.wait()

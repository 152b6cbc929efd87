"""A volume read through a helper container: the engine's tar stream becomes the same entries
the mountpoint walk gives, FIFOs, device nodes and extended attributes included (issue 14:
volume snapshots keep what files snapshots keep)."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

import davit.adapters.docker.archive as archive
from davit.adapters.docker.archive import END_OF_ARCHIVE, padding, tar_header, volume_archive_entries
from davit.adapters.files.tree import Skipped
from davit.adapters.repository.treeformat import CHAR, DIR, FIFO, FILE, Entry

CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep, as setcap writes it


def stream(entries: list[tuple[Entry, bytes]]) -> bytes:
    out = io.BytesIO()
    for entry, data in entries:
        out.write(tar_header(entry, entry.path))
        out.write(data + padding(len(data)))
    out.write(END_OF_ARCHIVE)
    return out.getvalue()


def test_fifos_devices_and_extended_attributes_in_the_engines_stream_become_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    written = [
        (
            Entry(
                path="data", type=DIR, mode=0o755, mtime_ns=1_600_000_000_000_000_000, xattrs={"user.note": b"on the volume root"}
            ),
            b"",
        ),
        (
            Entry(
                path="data/ping",
                type=FILE,
                mode=0o755,
                mtime_ns=1_600_000_000_000_000_000,
                size=4,
                xattrs={"security.capability": CAPABILITY, "user.bin": b"\x00\xff"},
            ),
            b"ELF!",
        ),
        (Entry(path="data/pipe", type=FIFO, mode=0o600, mtime_ns=1_600_000_000_000_000_000), b""),
        (Entry(path="data/tty", type=CHAR, mode=0o620, mtime_ns=1_600_000_000_000_000_000, rdev=os.makedev(4, 1)), b""),
    ]
    monkeypatch.setattr(archive, "open_archive", lambda *_args: io.BytesIO(stream(written)))
    read: list[Any] = list(volume_archive_entries(object(), "data", [], links=lambda: None))

    assert not [item for item in read if isinstance(item, Skipped)]
    entries = {item[0].path: item[0] for item in read}
    assert entries["data"].xattrs == {"user.note": b"on the volume root"}
    assert entries["data/ping"].xattrs == {"security.capability": CAPABILITY, "user.bin": b"\x00\xff"}
    assert entries["data/pipe"].type == FIFO
    assert (entries["data/tty"].type, entries["data/tty"].rdev) == (CHAR, os.makedev(4, 1))

"""davitd asks glibc to keep the blocks a backup frees for the next one (davit/daemon/allocator.py)."""

from __future__ import annotations

import platform

import pytest

from davit.daemon.allocator import keep_freed_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_daemon_keeps_freed_buffers_on_glibc() -> None:
    assert keep_freed_buffers() is True

"""One bounded read for the small files davit parses whole (job files, davit.toml, the log key):
a file over its cap is refused by its size before a byte is read, and one that grows past the
cap while being read is refused after at most one byte more than the cap."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from davit.daemon.config import MAX_CONFIG_BYTES, read_config
from davit.daemon.jobfiles import MAX_JOB_FILE_BYTES, load_job_file
from davit.domain.errors import InvalidConfig
from davit.eventstore.boundedread import TooLarge, read_bounded
from davit.eventstore.logkey import MAX_KEY_FILE, LogKeyError, read_log_key


def _read(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_bounded(fd, limit, "a test file")
    finally:
        os.close(fd)


def test_a_file_exactly_at_its_cap_is_read_whole_across_several_reads(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(200_000))  # more than one 64 KiB read
    assert _read(path, 200_000) == path.read_bytes()


def test_a_file_one_byte_over_its_cap_is_refused_by_its_size_unread(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    with pytest.raises(TooLarge, match=r"^101 bytes, larger than the 100 a test file may be; not read$"):
        _read(path, 100)


def test_content_that_grows_past_the_cap_after_the_size_check_is_refused_after_cap_plus_one_bytes() -> None:
    """A pipe's fstat size is 0, as a file's is before a writer appends to it: the read itself
    must stop at the cap."""
    r, w = os.pipe()
    try:
        os.write(w, b"y" * 500)
        with pytest.raises(TooLarge, match="larger than the 100 bytes a test file may be"):
            read_bounded(r, 100, "a test file")
        assert len(os.read(r, 1000)) == 500 - 101, "it read one byte past the cap, no more"
    finally:
        os.close(r)
        os.close(w)


def test_the_job_file_the_config_and_the_log_key_are_each_refused_over_their_cap(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir(mode=0o755)
    job = jobs / "big.toml"
    job.write_bytes(b"#" * (MAX_JOB_FILE_BYTES + 1))
    [problem] = load_job_file(job, jobs).problems
    assert problem.reason == f"{MAX_JOB_FILE_BYTES + 1} bytes, larger than the {MAX_JOB_FILE_BYTES} a job file may be; not read"

    config = tmp_path / "davit.toml"
    config.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(InvalidConfig) as caught:
        read_config(config)
    assert "larger than the" in caught.value.problems[0].reason

    key = tmp_path / "log.key"
    key.write_bytes(b"#" * (MAX_KEY_FILE + 1))
    key.chmod(0o400)
    with pytest.raises(LogKeyError, match=f"larger than the {MAX_KEY_FILE} a log key may be"):
        read_log_key(key)


def test_a_fifo_planted_at_the_config_path_is_refused_at_once_instead_of_hanging_a_reload(tmp_path: Path) -> None:
    """davitd reads davit.toml again at SIGHUP; a plain open() of a FIFO waits for a writer forever."""
    config = tmp_path / "davit.toml"
    os.mkfifo(config)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_config(config)
        except InvalidConfig as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "read_config is waiting on the FIFO"
    [error] = outcome
    assert isinstance(error, InvalidConfig)
    assert error.problems[0].reason == "not a regular file; not read"

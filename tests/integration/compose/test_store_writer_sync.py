"""compose.migrate's chunk writer on the target (`pipeline.store_command`) where the store
cannot be written past the page cache (no O_DIRECT: tmpfs here, or a dd without it such as
BusyBox's): a chunk's name is printed (acknowledged: the source then counts it as stored)
only once the chunk is fsynced, so a target host that loses power keeps every chunk it
acknowledged. Run locally under strace, counting the sync calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from davit.adapters.compose.pipeline import SYNC_BATCH, store_command


@pytest.mark.parametrize("dd", ["gnu", "busybox"])  # (GNU dd on a tmpfs with O_DIRECT, Linux 6.6+, takes the direct path)
def test_the_fallback_store_writer_syncs_each_chunk_before_naming_it(tmp_path: Path, dd: str) -> None:
    chunks = [os.urandom(n) for n in (1, 4096, (1 << 20) + 7)]
    names = [f"c{i}" for i in range(len(chunks))]
    stream = b"".join(f"{name} {len(c)}\n".encode() + c for name, c in zip(names, chunks, strict=True)) + b"END 0\n"
    store = Path("/dev/shm") / f"davit-store-fsync-{tmp_path.name}"
    store.mkdir(parents=True)
    prefix = ""
    if dd == "busybox":
        (tmp_path / "bin").mkdir()
        os.symlink("/bin/busybox", tmp_path / "bin" / "dd")
        prefix = f"PATH={tmp_path / 'bin'}:$PATH; "
    log = tmp_path / "strace.log"
    try:
        done = subprocess.run(
            [
                "strace",
                "-f",
                "-qq",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
                str(log),
                "sh",
                "-c",
                prefix + store_command(f"{store}"),
            ],
            input=stream,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split() == names
        assert [(store / "chunks" / f"{name}.zst").read_bytes() for name in names] == chunks
    finally:
        shutil.rmtree(store, ignore_errors=True)
    syncs = [line for line in log.read_text().splitlines() if "fsync(" in line or "fdatasync(" in line]
    assert len(syncs) >= len(chunks), log.read_text()


STRACE = ["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,write"]


def test_a_chunk_is_named_only_after_its_data_and_its_rename_into_the_store_are_on_disk(tmp_path: Path) -> None:
    # more chunks than one batch: the first batch is filed while the stream goes on
    chunks = [os.urandom(n) for n in (1, 4096, 70_001, *(5000 + i for i in range(SYNC_BATCH)))]
    names = [f"c{i}" for i in range(len(chunks))]
    stream = b"".join(f"{name} {len(c)}\n".encode() + c for name, c in zip(names, chunks, strict=True)) + b"END 0\n"
    store = tmp_path / "store"
    store.mkdir()
    log = tmp_path / "strace.log"
    done = subprocess.run(
        [*STRACE, "-o", str(log), "sh", "-c", store_command(str(store))],
        input=stream,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == names
    assert [(store / "chunks" / f"{name}.zst").read_bytes() for name in names] == chunks
    assert list((store / "incoming").iterdir()) == []
    lines = log.read_text().splitlines()

    def first(pred: Callable[[str], bool], what: str) -> int:
        found = [i for i, line in enumerate(lines) if pred(line)]
        assert found, f"no {what} in\n" + "\n".join(lines)
        return found[0]

    for name in names:
        synced = first(
            lambda line, n=name: "sync(" in line and "/incoming/w." in line and f"/{n}.zst>" in line, f"fsync of {name}"
        )
        renamed = first(lambda line, n=name: "rename" in line and f"{n}.zst" in line and "chunks" in line, f"rename of {name}")
        dir_synced = first(
            lambda line, r=renamed: "sync(" in line and line.rstrip().endswith(f"{store}/chunks>) = 0") and lines.index(line) > r,
            f"fsync of chunks/ after {name}'s rename",
        )
        named = first(
            lambda line, n=name: line.split(maxsplit=1)[-1].startswith("write(1") and f'"{n}\\n"' in line, f"ack of {name}"
        )
        assert synced < renamed < dir_synced < named, (name, synced, renamed, dir_synced, named)

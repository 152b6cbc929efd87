"""Two davitd processes, each with its own home, sharing one repository directory: one job
prunes (keep_last = 1) after every backup while the other daemon's job publishes, round after
round. Every snapshot left must verify (issue 14 finding 3, GUARANTEES.md line 14)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Davit, write_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = '[repositories.local]\npath = "{repo}"\n[data_path]\npack_size_mib = 1\nchunk_size_kib = 64\n'


def job(name: str, source: Path, extra: str = "") -> str:
    return f'name = "{name}"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n{extra}\n[source]\npath = "{source}"\n'


def test_two_daemons_on_one_repository_one_pruning_while_the_other_publishes_lose_no_chunk(tmp_path: Path) -> None:
    repo = tmp_path / "shared-repository"
    pruner, writer = Davit(tmp_path / "home-pruner"), Davit(tmp_path / "home-writer")
    sources = {"pruned": tmp_path / "pruned-src", "written": tmp_path / "written-src"}
    for source in sources.values():
        source.mkdir()
    try:
        for davit, name, extra in ((pruner, "pruned", "[retention]\nkeep_last = 1"), (writer, "written", "")):
            davit.home.mkdir()
            davit.configure(CONFIG.format(repo=repo))
            write_job(davit, f"{name}.toml", job(name, sources[name], extra))
            davit.start()
        deadline = time.monotonic() + 50
        rounds = 0
        while rounds < 8 and time.monotonic() < deadline:
            # The writer reuses what the pruner had last round: chunks its prune is deleting now.
            for f in sources["pruned"].iterdir():
                (sources["written"] / f"r{rounds}-{f.name}").write_bytes(f.read_bytes())
            for i in range(3):
                (sources["pruned"] / f"f{i}.bin").write_bytes(os.urandom(200_000))
            runs = [
                subprocess.Popen(
                    [str(BIN / "davit"), "--home", str(d.home), "run", name, "--wait", "--timeout", "60"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                for d, name in ((pruner, "pruned"), (writer, "written"))
            ]
            for proc in runs:
                out, _ = proc.communicate(90)
                assert proc.returncode == 0, out.decode()
            rounds += 1
        assert rounds >= 3
        assert [r["state"] for r in pruner.runs("pruned")] == ["succeeded"] * rounds
        assert [r["state"] for r in writer.runs("written")] == ["succeeded"] * rounds
        snapshots = pruner.json_lines("snapshots")
        assert sorted(s["job"] for s in snapshots).count("pruned") == 1
        assert sum(1 for s in snapshots if s["job"] == "written") == rounds
        for snap in snapshots:
            result = pruner.json_lines("verify", snap["id"])[0]
            assert result["ok"], result
        assert list((repo / "locks").glob("*.json")) == []
    finally:
        for davit in (pruner, writer):
            if davit.proc is not None and davit.proc.poll() is None:
                davit.stop()

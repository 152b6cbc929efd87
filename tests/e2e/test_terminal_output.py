"""Text from the log reaches an operator's terminal as text: a warning naming a file whose name
holds escape sequences (any local user can create one under a backed-up tree) is shown escaped by
`davit show`, `davit history` and `davit runs`, never as bytes that recolour or clear the screen."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_report import backup_job, hostile_socket, random_source


def test_a_hostile_file_name_in_a_warning_is_shown_escaped(davit: Davit, tmp_path: Path) -> None:
    source = random_source(tmp_path / "source", 1)
    sock = hostile_socket(source)
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.start()
    try:
        run = davit.wait_run_state("docs", {"succeeded", "failed"})
    finally:
        sock.close()
    for args in (("show", str(run["run_id"])), ("history", str(run["run_id"])), ("runs",)):
        out = davit.cli(*args).stdout
        assert "\x1b" not in out and "\x07" not in out, (args, out)
    assert "svg>\\x1b[31m\\x07" in davit.cli("show", str(run["run_id"])).stdout

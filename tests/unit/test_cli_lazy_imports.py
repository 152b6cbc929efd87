"""A short `davit` command imports its own module only: what `davit runs` (polled by scripts and
tests every few hundred ms) does not need (the PostgreSQL log's driver, pymongo, the other
commands) stays out of its start-up, which was a third of its CPU time."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from davit.daemon.cli.main import COMMANDS, cli


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_runs_command_on_a_sqlite_log_imports_no_postgres_driver_no_pymongo_and_no_other_command() -> None:
    loaded = modules_after(
        "from click.testing import CliRunner\n"
        "from davit.daemon.cli.main import cli\n"
        "CliRunner().invoke(cli, ['--home', '/nonexistent-davit-home', 'runs', '--json'])"
    )
    assert "davit.daemon.cli.runs" in loaded  # the command did load (and failed on the home)
    assert not {m for m in loaded if m.split(".")[0] in ("psycopg", "pymongo")}
    assert "davit.eventstore.postgres" not in loaded
    assert not {f"davit.daemon.cli.{m}" for m in COMMANDS.values() if m != "runs"} & loaded


def test_every_command_is_listed_and_resolves_to_its_module_under_its_own_name() -> None:
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    assert cli.get_command(ctx, "no-such-command") is None

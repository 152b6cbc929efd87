"""An operator turns on repository encryption in davit.toml and uses davit as before."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import Davit, tree_digest, write_job

PASSPHRASE = "tr0ub4dor&3-but-longer"


def encrypted_config(key_file: Path) -> str:
    return f'[repositories.local]\npath = "repository"\npassphrase_file = "{key_file}"\n'


def start_with_a_backed_up_job(davit: Davit, source: Path, key_file: Path) -> None:
    """A daemon on an encrypted repository, a backup job `home` of `source`, and its first snapshot."""
    davit.configure(encrypted_config(key_file))
    davit.start()
    write_job(davit, "home.toml", f'name = "home"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{source}"\n')
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    assert davit.cli("run", "home", "--wait", "--timeout", "60", check=False).returncode == 0


def test_an_encrypted_repository_backs_up_verifies_and_restores_without_the_passphrase_showing(
    davit: Davit, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    (source / "docs").mkdir(parents=True)
    (source / "docs" / "plans.txt").write_text("the plain text of the plans\n" * 1000)
    (source / "blob.bin").write_bytes(os.urandom(300_000))
    key_file = tmp_path / "passphrase"
    key_file.write_text(PASSPHRASE + "\n")
    key_file.chmod(0o600)
    start_with_a_backed_up_job(davit, source, key_file)
    [snap] = davit.json_lines("snapshots")
    assert "0 problems" in davit.cli("verify", snap["id"]).stdout

    repository = davit.home / "repository"
    assert b"aes-256-gcm" in (repository / "config.json").read_bytes()
    stored = b"".join(p.read_bytes() for p in repository.rglob("*") if p.is_file())
    assert b"the plain text of the plans" not in stored and b"plans.txt" not in stored

    target = tmp_path / "restored"
    write_job(davit, "back.toml", f'name = "back"\nkind = "files.restore"\n[source]\njob = "home"\n[target]\npath = "{target}"\n')
    davit.wait_run_state("back", {"succeeded"}, timeout=60)
    assert tree_digest(target) == tree_digest(source)

    outputs = [davit.cli(*args).stdout for args in (("history", "--json"), ("runs", "--json"), ("snapshots", "--json"))]
    outputs += [str(row) for row in davit.events()] + [log.read_text() for log in davit.logs]
    assert not any(PASSPHRASE in text for text in outputs)


def test_a_missing_passphrase_fails_the_run_clearly_and_the_daemon_keeps_going(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    key_file = tmp_path / "passphrase"
    key_file.write_text(PASSPHRASE)
    start_with_a_backed_up_job(davit, source, key_file)

    key_file.unlink()  # the daemon still has the repository open; a restarted one has no key
    davit.stop()
    davit.start()
    assert davit.cli("run", "home", "--wait", "--timeout", "60", check=False).returncode == 1
    run = davit.runs("home")[-1]
    assert run["state"] == "failed" and run["attempt"] == 1
    assert "repositories.local.passphrase" in run["error"] and str(key_file) in run["error"]
    assert len(davit.json_lines("snapshots")) == 1  # listing needs no passphrase
    assert davit.proc is not None and davit.proc.poll() is None


def test_an_operator_changes_the_passphrase_and_the_repository_keeps_its_snapshots(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(200_000))
    old_file, new_file = tmp_path / "old.pass", tmp_path / "new.pass"
    old_file.write_text(PASSPHRASE)
    new_file.write_text("a brand new passphrase")
    start_with_a_backed_up_job(davit, source, old_file)

    changed = davit.cli("repository", "passphrase", "local", "--new-passphrase-file", str(new_file))
    assert "passphrase changed" in changed.stdout
    assert PASSPHRASE not in changed.stdout + changed.stderr and "brand new" not in changed.stdout + changed.stderr
    again = davit.cli("repository", "passphrase", "local", "--new-passphrase-file", str(new_file), check=False)
    assert again.returncode == 2 and "passphrase does not open" in again.stderr  # the config still names the old one

    davit.stop()
    davit.configure(encrypted_config(new_file))
    davit.start()
    [snap] = davit.json_lines("snapshots")
    assert "0 problems" in davit.cli("verify", snap["id"]).stdout
    assert davit.cli("run", "home", "--wait", "--timeout", "60", check=False).returncode == 0
    assert davit.runs("home")[-1]["chunks_written"] == 0  # same key: the unchanged file is known

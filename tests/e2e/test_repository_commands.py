"""An operator creates, checks and measures repositories with `davit repository init|check|stats`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.conftest import Davit, write_job

PASSPHRASE = "correct horse battery staple, repository edition"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def config(key_file: Path) -> str:
    return (
        '[repositories.local]\npath = "repository"\n'
        f'[repositories.vault]\npath = "vault"\npassphrase_file = "{key_file}"\n'
        "[data_path]\npack_size_mib = 1\nchunk_size_kib = 64\n"
    )


def test_init_creates_once_with_or_without_encryption_as_configured(davit: Davit, tmp_path: Path) -> None:
    key_file = tmp_path / "passphrase"
    key_file.write_text(PASSPHRASE + "\n")
    davit.configure(config(key_file))

    refused = davit.cli("repository", "init", "local", "--passphrase-file", str(key_file), check=False)
    assert refused.returncode == 2 and "has no passphrase_env or passphrase_file" in refused.stderr
    assert not (davit.home / "repository").exists()

    created = davit.cli("repository", "init", "local")
    assert f"created at {davit.home / 'repository'}, not encrypted" in created.stdout
    assert "encryption" not in json.loads((davit.home / "repository" / "config.json").read_text())
    config_before = (davit.home / "repository" / "config.json").read_bytes()
    again = davit.cli("repository", "init", "local", check=False)
    assert again.returncode == 2 and "repository local already exists" in again.stderr
    assert (davit.home / "repository" / "config.json").read_bytes() == config_before

    assert "encrypted (AES-256-GCM)" in davit.cli("repository", "init", "vault").stdout
    assert "encryption" in json.loads((davit.home / "vault" / "config.json").read_text())
    outputs = created.stdout + created.stderr + refused.stderr + again.stderr
    assert PASSPHRASE not in outputs

    unknown = davit.cli("repository", "init", "nowhere", check=False)
    assert unknown.returncode == 2 and "no repository named 'nowhere'" in unknown.stderr


def test_check_and_stats_of_a_backed_up_repository_and_a_flipped_byte(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "notes.txt").write_text("remember the milk\n" * 5000)
    (source / "blob.bin").write_bytes(os.urandom(400_000))
    key_file = tmp_path / "passphrase"
    key_file.write_text(PASSPHRASE)
    davit.configure(config(key_file))
    davit.cli("repository", "init", "local")
    davit.start()
    write_job(davit, "home.toml", f'name = "home"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{source}"\n')
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    assert davit.cli("run", "home", "--wait", "--timeout", "60", check=False).returncode == 0
    assert davit.cli("run", "home", "--wait", "--timeout", "60", check=False).returncode == 0

    clean = davit.cli("repository", "check", "local", "--read-data")
    assert "repository local: 2 snapshots" in clean.stdout and clean.stdout.rstrip().endswith(": 0 problems")
    stats = json.loads(davit.cli("repository", "stats", "local", "--json").stdout)
    logical = sum(p.stat().st_size for p in source.iterdir())
    assert stats["snapshots"] == 2 and stats["jobs"] == {"home": {"snapshots": 2, "logical_bytes": 2 * logical}}
    packs = [p for p in (davit.home / "repository" / "packs").rglob("*.pack")]
    assert stats["packs"] == len(packs) and stats["pack_bytes"] == sum(p.stat().st_size for p in packs)
    assert "dedup 2." in davit.cli("repository", "stats", "local").stdout  # the second run stored nothing new

    pack = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    assert davit.cli("repository", "check", "local", check=False).returncode == 0  # structure is intact
    found = davit.cli("repository", "check", "local", "--read-data", check=False)
    assert found.returncode == 1
    assert f"problem: pack {pack.stem}: 1 chunks do not verify" in found.stdout
    result = json.loads(davit.cli("repository", "check", "local", "--subset", "1/1", "--json", check=False).stdout)
    assert result["ok"] is False and result["packs_read"] == len(packs)
    bad = davit.cli("repository", "check", "local", "--subset", "0/4", check=False)
    assert bad.returncode == 2 and "is not a subset" in bad.stderr

    pack.unlink()
    gone = davit.cli("repository", "check", "local", check=False)
    assert gone.returncode == 1 and f"names pack {pack.stem}, which is missing" in gone.stdout


def test_a_remote_repository_with_a_key_in_the_config_is_refused_naming_file_and_field(davit: Davit) -> None:
    davit.configure(
        f'[repositories.offsite]\nurl = "s3://davit-backups/host1"\naccess_key_id_env = "K"\nsecret_access_key = "{SECRET_KEY}"\n'
    )
    result = davit.cli("repository", "stats", "offsite", check=False)
    assert result.returncode == 2
    assert (
        f"{davit.home / 'davit.toml'}: repositories.offsite.secret_access_key: keys are never written in the config"
        in result.stderr
    )
    assert SECRET_KEY not in result.stdout + result.stderr


def test_a_valid_remote_section_leaves_the_local_repository_working(davit: Davit, tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("[h]:22 ssh-ed25519 AAAA\n")
    (tmp_path / "id").write_text("key\n")
    davit.configure(
        '[repositories.local]\npath = "repository"\n'
        f'[repositories.offsite]\nurl = "sftp://davit@h/srv/davit"\nknown_hosts = "{tmp_path / "known_hosts"}"\n'
        f'identity_file = "{tmp_path / "id"}"\nretry_seconds = 2\n'
        '[repositories.cloud]\nurl = "s3://davit-backups"\naccess_key_id_env = "K"\nsecret_access_key_env = "S"\n'
    )
    davit.cli("repository", "init", "local")
    listed = davit.cli("snapshots", "--json")
    assert listed.stdout.strip() == ""
    # the remote ones cannot be asked from here: each is named on stderr, and the listing goes on
    assert "warning: repository cloud left out: repositories.cloud.access_key_id: environment variable K" in listed.stderr
    assert "warning: repository offsite left out: " in listed.stderr
    assert "DSA is deprecated" not in listed.stderr
    assert json.loads(davit.cli("repository", "stats", "local", "--json").stdout)["snapshots"] == 0


def test_a_backup_only_repository_skips_retention_and_an_operator_prunes_with_a_maintenance_config(
    davit: Davit, tmp_path: Path
) -> None:
    """davitd's section says `delete = false` (its credential may not delete): runs succeed and
    say their retention was skipped; `davit repository prune` refuses with that config and
    works with the operator's, which names the same repository without it."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "notes.txt").write_text("remember the milk\n" * 5000)
    davit.configure('[repositories.local]\npath = "repository"\ndelete = false\n')
    davit.cli("repository", "init", "local")
    davit.start()
    write_job(
        davit,
        "home.toml",
        f'name = "home"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{source}"\n'
        "[retention]\nkeep_last = 1\n",
    )
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    for _ in range(3):
        (source / "changing.bin").write_bytes(os.urandom(200_000))
        assert davit.cli("run", "home", "--wait", "--timeout", "60", check=False).returncode == 0
    assert len(davit.json_lines("snapshots")) == 3
    warnings = [e for e in davit.events("type = 'RunWarning'") if "retention skipped" in json.dumps(e[3])]
    assert len(warnings) == 3
    assert "run `davit repository prune local` with a maintenance credential" in json.dumps(warnings[0][3])

    refused = davit.cli("repository", "prune", "local", check=False)
    assert refused.returncode == 1 and "prune refused: this credential may not delete objects" in refused.stderr

    maintenance = tmp_path / "maintenance.toml"
    maintenance.write_text(
        f'[daemon]\njobs_dir = "{davit.jobs_dir}"\n[repositories.local]\npath = "{davit.home / "repository"}"\n'
    )
    dry = davit.cli("--config", str(maintenance), "repository", "prune", "local", "--dry-run")
    assert "job home: kept 1, would forget 2" in dry.stdout and "(dry run: nothing was)" in dry.stdout
    assert len(davit.json_lines("snapshots")) == 3
    unknown = davit.cli("--config", str(maintenance), "repository", "prune", "local", "--job", "nope", check=False)
    assert unknown.returncode == 2 and "no job named 'nope'" in unknown.stderr
    done = json.loads(davit.cli("--config", str(maintenance), "repository", "prune", "local", "--json").stdout)
    assert len(done["jobs"]["home"]["forgotten"]) == 2 and done["packs_deleted"] >= 1
    assert len(davit.json_lines("snapshots")) == 1
    check = davit.cli("repository", "check", "local", "--read-data")
    assert "repository local: 1 snapshots" in check.stdout and check.stdout.rstrip().endswith(": 0 problems")

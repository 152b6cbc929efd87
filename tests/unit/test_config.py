"""The daemon config: the shipped example is valid and documents every key; bad values are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from davit.daemon.config import DEFAULT_CONFIG, ConfigModel, load_settings, read_config
from davit.domain.errors import InvalidConfig, InvalidJob
from davit.domain.jobs import parse_job
from davit.domain.jobs.nesting import loads_bounded

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_is_valid_and_equal_to_the_defaults() -> None:
    assert read_config(ROOT / "config" / "davit.toml") == ConfigModel()
    assert read_config(DEFAULT_CONFIG) == ConfigModel()


def test_every_config_key_is_in_the_documented_example() -> None:
    documented = tomllib.loads((ROOT / "config" / "davit.toml").read_text())
    model = ConfigModel().model_dump()
    for section, keys in model.items():
        if section == "repositories":
            continue
        assert set(keys) == set(documented[section]), section


def test_a_home_directory_is_self_contained(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h", create_home=True)
    assert settings.config_file == tmp_path / "h" / "davit.toml" and settings.config_file.exists()
    assert settings.jobs_dir == tmp_path / "h" / "jobs.d"
    assert settings.db_path == tmp_path / "h" / "state" / "davit.db"
    assert settings.repositories == {"local": tmp_path / "h" / "repository"}


def test_without_a_home_the_system_layout_honours_systemd_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "etc"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib"))
    settings = load_settings()
    assert settings.config_file == tmp_path / "etc" / "davit.toml"
    assert settings.jobs_dir == tmp_path / "etc" / "jobs.d"
    assert settings.db_path == tmp_path / "lib" / "state" / "davit.db"


def test_a_bad_value_is_named_with_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "davit.toml"
    path.write_text("[daemon]\nmax_parallel_runs = 0\n")
    with pytest.raises(InvalidConfig) as err:
        read_config(path)
    assert err.value.problems[0].field == "daemon.max_parallel_runs"
    assert str(path) in str(err.value)


def test_the_log_key_is_beside_the_config_or_the_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "etc"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib"))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_settings().log_key_path == tmp_path / "etc" / "log.key"
    (tmp_path / "creds").mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert load_settings().log_key_path == tmp_path / "etc" / "log.key"  # no such credential given
    (tmp_path / "creds" / "log.key").write_text("ab" * 32)
    assert load_settings().log_key_path == tmp_path / "creds" / "log.key"


def test_a_log_key_file_the_config_names_is_the_log_key_even_with_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several davitd sharing one log each name their copy of its one key (README "Tamper evidence")."""
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "log.key").write_text("ab" * 32)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "davit.toml").write_text('[daemon]\nlog_key_file = "../shared/log.key"\n')
    assert load_settings(home=tmp_path / "home").log_key_path == tmp_path / "home" / ".." / "shared" / "log.key"
    (tmp_path / "home" / "davit.toml").write_text(f'[daemon]\nlog_key_file = "{tmp_path / "keys" / "log.key"}"\n')
    assert load_settings(home=tmp_path / "home").log_key_path == tmp_path / "keys" / "log.key"


def test_only_davitd_creates_a_home_a_typo_is_named_and_nothing_is_made(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="--home: no such directory"):
        load_settings(home=tmp_path / "typo")
    with pytest.raises(InvalidConfig, match="--config: no such file"):
        load_settings(home=tmp_path, config_file=tmp_path / "typo.toml", create_home=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "field", "reason"),
    [
        (b"x = " + b"[" * 2000 + b"]" * 2000 + b"\n", "(toml)", "nested deeper than"),
        (b'[daemon]\nlog_level = "info\xff"\n', "(file)", "not UTF-8"),
        (b"# " + b"a" * (2 << 20) + b"\n", "(file)", "larger than"),
        (b"[" + b".".join([b"a"] * 2000) + b"]\n", "a", "nested deeper than"),
    ],
    ids=["nested-2000", "not-utf8", "2-MiB", "deep-table-header"],
)
def test_a_hostile_config_file_is_invalid_config_naming_field_and_reason_never_another_exception(
    tmp_path: Path, content: bytes, field: str, reason: str
) -> None:
    """A config read at SIGHUP that raised anything but InvalidConfig (RecursionError,
    UnicodeDecodeError) escaped the reload and stopped davitd."""
    config = tmp_path / "davit.toml"
    config.write_bytes(content)
    with pytest.raises(InvalidConfig) as caught:
        read_config(config)
    [problem] = caught.value.problems
    assert problem.field == field and reason in problem.reason


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 2000 + "]" * 2000 + "\n",
        "[" + ".".join(["a"] * 2000) + "]\n",
        ".".join(["b"] * 40) + " = 1\n",
        "x = {\n",
        "x = 1\nx = 2\n",
    ],
    ids=["deep-brackets", "deep-table-header", "deep-dotted-key", "unclosed-table", "duplicate-key"],
)
def test_the_config_and_a_job_file_give_one_verdict_on_the_same_bad_toml(tmp_path: Path, text: str) -> None:
    """Both parse TOML through `nesting.loads_bounded`: the same text is refused for the same
    field and reason, whichever file holds it."""
    config = tmp_path / "davit.toml"
    config.write_text(text)
    with pytest.raises(InvalidConfig) as as_config:
        read_config(config)
    with pytest.raises(InvalidJob) as as_job:
        parse_job(text, "job.toml")
    assert as_config.value.problems == as_job.value.problems == [loads_bounded(text)]

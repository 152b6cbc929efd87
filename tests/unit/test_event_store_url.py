"""The PostgreSQL event log's URL is read by reference (`[daemon] event_store_url_file`): a
file that cannot serve gets an error naming the file and the reason, never the URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.daemon.config import load_settings
from davit.daemon.eventlogs import postgres_store, read_url_file
from davit.domain.errors import InvalidConfig

SECRET = "pw-never-shown"


def _home(tmp_path: Path, url_text: str | None) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "davit.toml").write_text('[daemon]\nevent_store_url_file = "event-store.url"\n')
    if url_text is not None:
        (home / "event-store.url").write_text(url_text)
    return home


def _refusal(tmp_path: Path, url_text: str | None) -> str:
    settings = load_settings(_home(tmp_path, url_text))
    with pytest.raises(InvalidConfig) as refused:
        postgres_store(settings)
    message = str(refused.value)
    assert "event-store.url" in message and SECRET not in message
    return message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "No such file"),
        (f"mysql://u:{SECRET}@h/db\n", "must be postgresql://"),
        (f"postgresql://u:{SECRET}@h:5432\n", "names no database"),
        (f"postgresql://u:{SECRET}@h/db\npostgresql://u:{SECRET}@h/db2\n", "one URL on one line"),
        ("\n", "one URL on one line"),
        (f"postgresql://u:{SECRET}@h:port/db\n", "not a URL"),
        (f"postgresql://u:{SECRET}@h:{SECRET}/db\n", "not a URL"),
    ],
    ids=["missing", "another-scheme", "no-database", "two-urls", "empty", "port-not-a-number", "password-as-port"],
)
def test_an_unusable_url_file_is_refused_naming_the_file_and_why(tmp_path: Path, text: str | None, reason: str) -> None:
    assert reason in _refusal(tmp_path, text)


def test_a_symlink_planted_at_the_url_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.url"
    target.write_text(f"postgresql://u:{SECRET}@h/db\n")
    home = _home(tmp_path, None)
    os.symlink(target, home / "event-store.url")
    with pytest.raises(InvalidConfig, match="cannot read"):
        read_url_file(home / "event-store.url")


def test_a_good_url_file_gives_a_store_that_names_itself_without_the_password(tmp_path: Path) -> None:
    settings = load_settings(_home(tmp_path, f"postgresql://davit:{SECRET}@db.example:6543/davitlog\n"))
    store = postgres_store(settings)
    assert store.where == "postgresql db.example:6543/davitlog"
    assert SECRET not in repr(store) and SECRET not in store.where


def test_without_the_setting_the_log_stays_sqlite_in_the_state_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "davit.toml").write_text("[daemon]\n")
    settings = load_settings(home)
    assert settings.event_store_url_path is None and settings.db_path == home / "state" / "davit.db"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:pw@{SECRET}@h/db\n",  # the tail would be taken for the host
        f"postgresql://u:pw@x:{SECRET}@h/db\n",  # ... for the port
        f"postgresql://u:pw@x/{SECRET}@h/db\n",  # ... for the database
    ],
    ids=["tail-as-host", "tail-as-port", "tail-as-database"],
)
def test_a_password_with_a_raw_at_sign_is_refused_without_showing_any_of_it(tmp_path: Path, url: str) -> None:
    """An operator pastes a password holding '@' unencoded: the URL parser would cut the password
    at the first '@' and show the rest as the host in every error and log line."""
    message = _refusal(tmp_path, url)
    assert "%40" in message and "h:5432" not in message

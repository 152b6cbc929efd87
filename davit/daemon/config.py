"""The daemon configuration (`davit.toml`) and where everything lives.

`--home DIR` makes one self-contained directory: `DIR/davit.toml` (davitd writes it with
defaults if missing), `DIR/jobs.d/`, `DIR/state/davit.db`, `DIR/repository/`, `DIR/log.key`.
Without it davit follows the system layout: `/etc/davit/davit.toml`, `/etc/davit/jobs.d` and
`/etc/davit/log.key`, state under `/var/lib/davit`, honouring systemd's
`CONFIGURATION_DIRECTORY` and `STATE_DIRECTORY`. Relative `jobs_dir` is read against the
config file's directory; relative `state_dir` and repository paths against the state root
(the home, or the system state directory). A repository may also be remote (an `sftp://` or
`s3://` url): its section is validated in `repoconfig.py`, and the files it names (known_hosts,
identity_file, key files) are read against the config file's directory.

Only davitd creates a home (`create_home`): for the CLI a `--home` that is not a directory or
a `--config` that is not a file is a usage error naming it, and nothing is created (a typo
must not grow a second, empty davit).
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from davit.adapters.repository.location import RepositoryLocation
from davit.adapters.repository.tuning import Tuning
from davit.daemon.metricsconfig import MetricsSection
from davit.daemon.repoconfig import RepositorySection
from davit.domain.errors import FieldProblem, InvalidConfig
from davit.domain.jobs import nesting, problems_from_validation
from davit.domain.jobs.base import DAEMON_NAME_PATTERN as JOB_DAEMON_NAME
from davit.domain.notifyspec import ALL_EVENTS, ENV_NAME_PATTERN, NotifyEvent
from davit.eventstore.boundedread import TooLarge, read_bounded

DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")
# davitd and davit set this umask first thing: what they create is 0700/0600, the owner's alone
PRIVATE_UMASK = 0o077
MAX_CONFIG_BYTES = 1 << 20
DAEMON_NAME_PATTERN = (
    f"^({JOB_DAEMON_NAME.strip('^$')})?$"  # ("": the host name)  # as a job file: a config larger than this is refused unread
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonSection(_Section):
    jobs_dir: str = "jobs.d"
    state_dir: str = "state"
    max_parallel_runs: int = Field(default=2, ge=1, le=64)
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    log_format: str = Field(default="text", pattern="^(text|json)$")  # on stderr; ignored under the journal
    request_poll_seconds: float = Field(default=0.25, gt=0, le=1.0)
    # A file holding a postgresql:// URL (with its password): the event log on PostgreSQL
    # instead of SQLite (davit/daemon/eventlogs.py). Read by reference, never logged.
    event_store_url_file: str = ""  # "": SQLite
    # The event log's HMAC key (`Settings.log_key_path`): several daemons sharing one log each
    # name their copy of the one key. "": the systemd credential log.key, else beside this file.
    log_key_file: str = ""
    # This daemon's name among the daemons sharing one log ("": the host name); recorded on its
    # runs' claims and its heartbeat row (`davit daemons`).
    name: str = Field(default="", pattern=DAEMON_NAME_PATTERN)
    # Several daemons on one (PostgreSQL) log: a run is executed under a lease the owner renews
    # every `lease_renew_seconds`; one not renewed for `lease_seconds` is taken over.
    lease_seconds: float = Field(default=60.0, ge=5, le=3600)
    lease_renew_seconds: float = Field(default=20.0, ge=1, le=1200)

    @model_validator(mode="after")
    def _renew_within_lease(self) -> DaemonSection:
        if self.lease_renew_seconds * 2 > self.lease_seconds:
            raise ValueError("lease_renew_seconds must be at most half of lease_seconds (a renewal may be late once)")
        return self


class RetrySection(_Section):
    max_attempts: int = Field(default=5, ge=1)
    initial_seconds: float = Field(default=10.0, gt=0)
    max_seconds: float = Field(default=600.0, gt=0)


class DataPathSection(_Section):
    chunk_size_kib: int = Field(default=1024, ge=64, le=65536)
    pack_size_mib: int = Field(default=32, ge=1, le=1024)
    checkpoint_seconds: float = Field(default=3.0, gt=0)
    workers: int = Field(default=2, ge=1, le=64)
    inflight_chunks: int = Field(default=16, ge=1, le=1024)
    compression_level: int = Field(default=3, ge=1, le=22)
    text_compression_level: int = Field(default=1, ge=1, le=22)  # SQL statements (`Tuning`)

    def tuning(self) -> Tuning:
        return Tuning(
            chunk_size=self.chunk_size_kib << 10,
            pack_size=self.pack_size_mib << 20,
            checkpoint_seconds=self.checkpoint_seconds,
            workers=self.workers,
            inflight_chunks=self.inflight_chunks,
            compression_level=self.compression_level,
            text_compression_level=self.text_compression_level,
        )


class NotifyTarget(_Section):
    """Where messages go: apprise URLs in a file (one a line) or an environment variable
    (separated by spaces or commas), never inline: they hold tokens."""

    urls_file: str | None = None
    urls_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    events: list[NotifyEvent] = Field(default_factory=lambda: list(ALL_EVENTS))

    @model_validator(mode="after")
    def _some_urls(self) -> NotifyTarget:
        if self.urls_file is None and self.urls_env is None:
            raise ValueError("give urls_file (a file, one apprise URL a line) or urls_env (an environment variable)")
        return self


class NotificationsSection(_Section):
    """`[notifications]`: how deliveries are tried, and the targets, `[notifications.targets.NAME]`,
    each with the URLs it reads and the events it wants."""

    targets: dict[str, NotifyTarget] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff_seconds: float = Field(default=30.0, gt=0)
    max_backoff_seconds: float = Field(default=1800.0, gt=0)
    catch_up_hours: float = Field(default=24.0, ge=0)
    stale_check_seconds: float = Field(default=60.0, gt=0)

    def all_targets(self) -> dict[str, NotifyTarget]:
        return dict(self.targets)


class ConfigModel(_Section):
    daemon: DaemonSection = DaemonSection()
    retry: RetrySection = RetrySection()
    data_path: DataPathSection = DataPathSection()
    repositories: dict[str, RepositorySection] = Field(default_factory=lambda: {"local": RepositorySection(path="repository")})
    metrics: MetricsSection = MetricsSection()
    notifications: NotificationsSection = NotificationsSection()


@dataclass(frozen=True)
class Settings:
    """The configuration with every path resolved."""

    config_file: Path
    model: ConfigModel
    jobs_dir: Path
    state_dir: Path
    # every configured repository, local or remote, by name
    locations: dict[str, RepositoryLocation]
    state_root: Path

    @property
    def repositories(self) -> dict[str, Path]:
        """The directories of the configured *local* repositories, by name (a remote one has
        none: see `locations`)."""
        return {name: loc.path for name, loc in self.locations.items() if loc.path is not None}

    @property
    def db_path(self) -> Path:
        return self.state_dir / "davit.db"

    @property
    def event_store_url_path(self) -> Path | None:
        """The file naming the PostgreSQL event log, read against the config file's directory; None: SQLite."""
        value = self.model.daemon.event_store_url_file
        if not value:
            return None
        return Path(value) if value.startswith("/") else self.config_file.parent / value

    @property
    def daemon_name(self) -> str:
        """`[daemon] name`, or the host name (its first label, as `hostname -s` gives it)."""
        return self.model.daemon.name or daemon_name_of_host()

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "davitd.lock"

    @property
    def log_key_path(self) -> Path:
        """The event log's HMAC key: `[daemon] log_key_file` if the config names one (read against
        the config file's directory), else the systemd credential `log.key` when davitd is given
        one, else `log.key` beside the config file; outside the state directory either way."""
        named = self.model.daemon.log_key_file
        if named:
            return Path(named) if named.startswith("/") else self.config_file.parent / named
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / "log.key").exists():
            return Path(credentials) / "log.key"
        return self.config_file.parent / "log.key"


def daemon_name_of_host() -> str:
    """The host's short name, as a daemon name may be; `InvalidConfig` if it cannot be one."""
    host = socket.gethostname().split(".", 1)[0]
    if not re.fullmatch(JOB_DAEMON_NAME, host):
        raise InvalidConfig(
            "davit.toml", [FieldProblem("daemon.name", f"the host name {host!r} is not a daemon name: set [daemon] name")]
        )
    return host


def load_settings(home: Path | None = None, config_file: Path | None = None, create_home: bool = False) -> Settings:
    if config_file is not None and not config_file.is_file():
        raise InvalidConfig(str(config_file), [FieldProblem("--config", "no such file")])
    if home is not None:
        home = home.absolute()
        if not home.is_dir() and not create_home:
            raise InvalidConfig(str(home), [FieldProblem("--home", "no such directory")])
        if config_file is None:
            config_file = home / "davit.toml"
            if create_home and not config_file.exists():
                home.mkdir(parents=True, exist_ok=True)
                config_file.write_text(DEFAULT_CONFIG.read_text())
        state_root = home
    else:
        conf_dir = Path(os.environ.get("CONFIGURATION_DIRECTORY", "/etc/davit").split(":")[0])
        config_file = config_file or conf_dir / "davit.toml"
        state_root = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/davit").split(":")[0])
    return _settings(config_file, read_config(config_file), state_root)


def reload_settings(current: Settings) -> Settings:
    """The settings as the config file says now (same file, same state root); `InvalidConfig`
    if it no longer validates."""
    return _settings(current.config_file, read_config(current.config_file), current.state_root)


def changed_fields(old: ConfigModel, new: ConfigModel) -> list[str]:
    """Dotted names of the settings that differ, e.g. `daemon.max_parallel_runs`, `repositories.offsite`."""
    before, after = old.model_dump(), new.model_dump()
    out = []
    for section in sorted(set(before) | set(after)):
        a, b = before.get(section) or {}, after.get(section) or {}
        out += [f"{section}.{key}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    return out


def _settings(config_file: Path, model: ConfigModel, state_root: Path) -> Settings:
    base = config_file.parent

    def under(root: Path, value: str) -> Path:
        return Path(value) if value.startswith("/") else root / value

    return Settings(
        config_file=config_file,
        model=model,
        jobs_dir=under(base, model.daemon.jobs_dir),
        state_dir=under(state_root, model.daemon.state_dir),
        locations={name: r.location(name, state_root, base) for name, r in model.repositories.items()},
        state_root=state_root,
    )


def read_config(path: Path) -> ConfigModel:
    """The config file's settings (defaults if it is absent); `InvalidConfig` naming field and
    reason for anything wrong with it, never another exception: a bad file read at SIGHUP must
    leave the running daemon as it was. Like a job file: at most `MAX_CONFIG_BYTES`, UTF-8,
    nested no deeper than the job files' bound."""
    file = str(path)
    try:
        # O_NONBLOCK: a FIFO at the path opens at once and is refused, instead of hanging a reload
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidConfig(file, [FieldProblem("(file)", "not a regular file; not read")])
            data = read_bounded(fd, MAX_CONFIG_BYTES, "the config file")
        finally:
            os.close(fd)
    except FileNotFoundError:
        data = b""
    except TooLarge as exc:
        raise InvalidConfig(file, [FieldProblem("(file)", str(exc))]) from None
    except OSError as exc:
        raise InvalidConfig(file, [FieldProblem("(file)", exc.strerror or str(exc))]) from exc
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidConfig(file, [FieldProblem("(file)", f"not UTF-8: {exc.reason} at byte {exc.start}")]) from None
    raw = nesting.loads_bounded(text)
    if isinstance(raw, FieldProblem):
        raise InvalidConfig(file, [raw])
    try:
        model = ConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise InvalidConfig(file, problems_from_validation(exc)) from exc
    except RecursionError:
        raise InvalidConfig(file, [FieldProblem("(toml)", nesting.too_deep())]) from None
    problems = [
        FieldProblem(f"repositories.{name}.{p.field}", p.reason)
        for name, section in model.repositories.items()
        for p in section.problems(path.parent)
    ]
    if problems:
        raise InvalidConfig(file, problems)
    return model

"""`davitd`: the daemon's entry point. Loads settings, opens the log, runs the supervisor."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import anyio
import click

from davit.daemon.allocator import keep_freed_buffers
from davit.daemon.bootstrap import Parts
from davit.daemon.config import PRIVATE_UMASK, Settings, load_settings
from davit.daemon.eventlogs import on_postgres
from davit.daemon.leases import LeasePolicy
from davit.daemon.loghealth import LogHealth
from davit.daemon.logkeys import find_log_key, finish_log_key, open_keyed, provision_log_key
from davit.daemon.logsetup import configure as configure_logging
from davit.daemon.metrics import serving_metrics
from davit.daemon.notify import Notifier
from davit.daemon.statelock import holding_state_lock
from davit.daemon.supervisor import Supervisor
from davit.daemon.version import davit_version
from davit.domain.errors import DavitError


def lease_policy(settings: Settings) -> LeasePolicy:
    """Leases on a log several daemons may share (PostgreSQL; SQLite's is one daemon's)."""
    daemon = settings.model.daemon
    return LeasePolicy(settings.daemon_name, daemon.lease_seconds, daemon.lease_renew_seconds)


async def _serve(parts: Parts) -> None:
    with holding_state_lock(parts.settings):
        await _serve_locked(parts)


async def _serve_locked(parts: Parts) -> None:
    notifier = Notifier()
    health = LogHealth(notifier)  # appends wait out a log that cannot be written
    key = await find_log_key(parts.settings)
    store = await open_keyed(parts.settings, key, outage=health)
    try:
        finish_log_key(key)  # the log is sealed under it now: nobody seals again
        async with serving_metrics(parts.settings, store, davit_version()):
            leases = lease_policy(parts.settings) if on_postgres(parts.settings) else None
            await Supervisor(parts, store, notifier, davit_version(), health, leases=leases).run()
    finally:
        await store.close()
        parts.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), help="Self-contained home directory.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="Config file.")
@click.option(
    "--make-log-key",
    is_flag=True,
    help="Only make the event log's key if it is missing and seal the log under it, then exit (systemd's ExecStartPre=+).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Lines on stderr as text or one JSON object each (default: the config's log_format).",
)
@click.version_option(davit_version(), prog_name="davitd")
def main(home: Path | None, config_file: Path | None, make_log_key: bool, log_format: str | None) -> None:
    """Run the davit daemon: watch the jobs directory, run jobs, resume interrupted runs."""
    # Everything davitd creates (repository, log with its -wal and -shm, staging, exports) is
    # its owner's alone, whatever umask it was started with: it holds copies of what it backs up.
    os.umask(PRIVATE_UMASK)
    try:
        settings = load_settings(home, config_file, create_home=True)
    except DavitError as exc:
        click.echo(f"davitd: {exc}", err=True)
        sys.exit(exc.exit_code)
    if make_log_key:
        try:
            click.echo(f"davitd: log key {anyio.run(provision_log_key, settings).path}")
        except DavitError as exc:
            click.echo(f"davitd: {exc}", err=True)
            sys.exit(exc.exit_code)
        return
    keep_freed_buffers()  # a backup's blocks reuse freed memory, without a page fault per 4 KiB
    configure_logging(settings.model.daemon.log_level, log_format or settings.model.daemon.log_format)
    try:
        anyio.run(_serve, Parts(settings))
    except DavitError as exc:
        logging.getLogger("davitd").error("%s", exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

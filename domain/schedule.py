"""When a scheduled job is due: pure, with `now` passed in.

A job fires for the latest cron time that has passed since its previous fire (or since it was
defined). Fire times missed while the daemon was down collapse into one run at start-up, the
way anacron does it, instead of a burst of runs.
"""

from __future__ import annotations

from datetime import datetime

from croniter import croniter


def due_fire(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The cron time to fire for now, or None if no cron time passed after `since`."""
    latest = croniter(schedule, now).get_prev(datetime)
    return latest if latest > since else None

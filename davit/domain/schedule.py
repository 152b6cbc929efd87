"""When scheduled jobs are due: pure, with `now` passed in.

A job fires for the latest cron time that has passed since its previous fire (or since it was
defined). Fire times missed while the daemon was down collapse into one run at start-up, the
way anacron does it, instead of a burst of runs.

`Timetable` keeps each job's next fire, computed once with croniter when the job is planned
(defined, fired, or after the clock moved), in a heap: finding what is due, and how long to
sleep, costs O(log n) instead of a croniter call per job per tick.

Clocks: fires are decided against the wall clock, which can be stepped. A previous fire (or a
definition) recorded more than `FUTURE_TOLERANCE` ahead of `now` was made while the clock was
wrong: it does not hold the job back; its next fire is counted from `now`, and the planner
reports how far ahead it was so the daemon can say the clock moved. A smaller lead is honoured
as recorded, so a small NTP step back right after a fire does not run it twice.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

FUTURE_TOLERANCE = timedelta(seconds=60)


def due_fire(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The cron time to fire for now, or None if no cron time passed after `since`."""
    latest = _local(croniter(schedule, _wall(now)).get_prev(datetime), now)
    return latest if _utc(latest) > _utc(since) else None


def next_fire(schedule: str, after: datetime, zone_of: datetime) -> datetime:
    """The first cron time after `after`, read in the zone of `zone_of` (the clock's)."""
    times = croniter(schedule, _wall(after.astimezone(zone_of.tzinfo)))
    while _utc(due := _local(times.get_next(datetime), zone_of)) <= _utc(after):
        pass  # a wall time of the hour the clocks went back, met again: it already passed
    return due


# Cron times are wall-clock times in the clock's zone, which may have daylight-saving rules:
# croniter walks naive wall times (its own DST handling misplaces times around the change), a
# wall time is placed in the zone at its first occurrence (one run in the hour the clocks go
# back; a time in the hour skipped going forward runs as that hour's offset places it, once),
# and instants are compared in UTC (two datetimes sharing a zone compare by wall time, which
# repeats in that hour).
def _wall(at: datetime) -> datetime:
    return at.replace(tzinfo=None)


def _local(wall: datetime, zone_of: datetime) -> datetime:
    return wall.replace(tzinfo=zone_of.tzinfo, fold=0)


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


@dataclass(frozen=True)
class Plan:
    """A job's schedule, the instant its fires are counted from, and its next fire."""

    schedule: str
    after: datetime
    due: datetime
    seq: int


class Timetable:
    """Scheduled jobs by their next fire. Entries are replaced lazily: planning a job again
    pushes a new heap entry, and the old one is discarded when it reaches the top."""

    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._parked: dict[str, Plan] = {}  # popped as due, waiting for their fire to be recorded
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._plans)

    def plan(self, name: str, schedule: str, since: datetime, now: datetime) -> timedelta | None:
        """(Re)plan `name`: its next fire is the first cron time after `since`, or after `now`
        when `since` lies more than FUTURE_TOLERANCE ahead. Returns that lead, else None."""
        since = since.astimezone(now.tzinfo)  # cron times are read in the clock's own zone
        ahead = _utc(since) - _utc(now)
        after = now if ahead > FUTURE_TOLERANCE else since
        self._parked.pop(name, None)
        try:
            due = next_fire(schedule, after, now)
        except CroniterBadDateError:
            # a day that never comes (30 February), in a spec recorded before the job file check
            # refused it: the job has no fire, and must not stop the others' planning
            self.drop(name)
            return None
        self._put(name, Plan(schedule, after, due, self._next_seq()))
        return ahead if ahead > FUTURE_TOLERANCE else None

    def postpone(self, name: str, until: datetime) -> None:
        """Try `name` again at `until` (its fire could not be recorded), counting from where it was."""
        plan = self._plans.get(name) or self._parked.pop(name, None)
        if plan is not None:
            self._put(name, Plan(plan.schedule, plan.after, until, self._next_seq()))

    def drop(self, name: str) -> None:
        self._plans.pop(name, None)
        self._parked.pop(name, None)

    def clear(self) -> None:
        self._plans.clear()
        self._parked.clear()
        self._heap.clear()

    def next_due(self) -> datetime | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def plan_of(self, name: str) -> Plan | None:
        return self._plans.get(name)

    def pop_due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Jobs due at `now`, each with the cron time to record (the latest one passed: missed
        fires collapse into one). A popped job is parked, not due again, until it is planned
        again (its fire recorded) or postponed (it could not be)."""
        fired: list[tuple[str, datetime]] = []
        while True:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                return fired
            _, _, name = heapq.heappop(self._heap)
            plan = self._parked[name] = self._plans.pop(name)
            at = due_fire(plan.schedule, plan.after, now) or plan.due
            fired.append((name, at))

    def _put(self, name: str, plan: Plan) -> None:
        self._plans[name] = plan
        heapq.heappush(self._heap, (_utc(plan.due), plan.seq, name))  # (UTC: instants, not wall times)
        if len(self._heap) > 2 * len(self._plans) + 64:  # too many stale entries: rebuild
            self._heap = [(_utc(p.due), p.seq, n) for n, p in self._plans.items()]
            heapq.heapify(self._heap)

    def _discard_stale(self) -> None:
        while self._heap:
            _, seq, name = self._heap[0]
            plan = self._plans.get(name)
            if plan is not None and plan.seq == seq:
                return
            heapq.heappop(self._heap)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


class MonotonicQueue:
    """Keys due at instants of a monotonic clock (waits that must not follow wall-clock steps),
    earliest first. A key pushed again replaces its earlier entry."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def push(self, key: str, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def next_due(self) -> float | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        out: list[str] = []
        while True:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            _, key = heapq.heappop(self._heap)
            del self._due[key]
            out.append(key)

    def _discard_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)

"""The notification deliveries already settled (sent, or given up), remembered within a bound.

davitd learns them from the `notifications` stream at every start and adds one per delivery, so
a plain set would grow with every message ever sent. A settled (key, target) only matters while
its message can be owed again, and that is narrow: a stale message is worked out afresh at
every stale check while the job stays stale (its key names the job's last success, so only the
latest per job and target can come back), and the others come back only from the start-up seed
(runs ended within `catch_up_hours`, or not ended) or from a failed run an operator resumes and
that fails again. So the latest stale key is kept per (job, target), and of the others the last
`MAX_SETTLED` settled, oldest forgotten first: a message is sent twice only if more than that
many deliveries were settled between its first sending and the moment it is owed again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_SETTLED = 10_000  # (key, target) pairs remembered besides the stale ones: about 1.5 MB at most
STALE_PREFIX = "job_stale:"


def _stale_job(key: str) -> str | None:
    """The job of a stale message's key (`job_stale:JOB:LASTSUCCESS`), else None."""
    if not key.startswith(STALE_PREFIX):
        return None
    job, _, _last = key.removeprefix(STALE_PREFIX).rpartition(":")
    return job


@dataclass
class SettledKeys:
    most: int = MAX_SETTLED
    _recent: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    _stale: dict[tuple[str, str], str] = field(default_factory=dict)  # (job, target) -> its last stale key

    def add(self, pair: tuple[str, str]) -> None:
        key, target = pair
        job = _stale_job(key)
        if job is not None:
            self._stale[(job, target)] = key
            return
        self._recent[pair] = None
        self._recent.move_to_end(pair)
        while len(self._recent) > self.most:
            self._recent.popitem(last=False)

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        key, target = pair
        job = _stale_job(str(key))
        if job is not None:
            return self._stale.get((job, str(target))) == key
        return pair in self._recent

    def __len__(self) -> int:
        return len(self._recent) + len(self._stale)

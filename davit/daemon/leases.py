"""Run leases: several davitd on one (PostgreSQL) event log, each run executed by one at a time.

A daemon that dispatches a run first appends `RunClaimed` (owner, a fresh token, the lease's
length) to the run's stream at the version it folded: of two daemons claiming at once, one
append lands and the other gets `ConcurrencyError` and leaves the run. The owner appends
`LeaseRenewed` every `lease_renew_seconds` (a fraction of `lease_seconds`, so a run of an hour
adds 180 small events, not one per beat). Every later event of the run is appended by the
owner's recorder at the version it last wrote, so once another daemon appended anything (a
takeover) the old owner's next append is refused: that refusal is the fence, whatever the
clocks say. The old owner then stops the run's work and records nothing more for it.

When is a lease over? Not by comparing wall clocks of different hosts (`expires_at` is only
for people): an observer notes, on its own monotonic clock, when it saw the lease's last
change (claim or renewal, `LeaseBook.observe`), and takes the run over once `lease_seconds`
pass without one. The owner counts its lease from before the append that claimed or renewed
it, so its own deadline always comes first; past it, its work is asked to stop at the next
chunk boundary (a daemon paused by SIGSTOP and continued finds its deadline passed, and a
checkpoint it tries is refused without being sent, `OwnLease.check`). What the pause's
worker had written before then (a pack in the repository, content-addressed) is not recorded
and is written again by the new owner's resume.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from davit.daemon.scheduler import Clock
from davit.domain import events as ev
from davit.domain.errors import RunStopped
from davit.domain.machine import ACTIVE, RunState
from davit.domain.runs import RunView

log = logging.getLogger("davitd.leases")

LEASE_LOST = "lease lost"
ROSTER_SECONDS = 5.0  # each daemon's heartbeat row (`davit daemons`): replaced in place, the log does not grow by it
# a daemon whose row is younger than three of its beats may still be alive: not forgotten, not
# started twice, its claimed requests not taken over
ROSTER_LIVE_SECONDS = 3 * ROSTER_SECONDS
# States in which a daemon works on a run (a lease matters); `cancelling` too: its owner settles it.
HELD_STATES = ACTIVE | {RunState.CANCELLING}


@dataclass(frozen=True)
class LeasePolicy:
    name: str  # this daemon's name
    lease_seconds: float
    renew_seconds: float


@dataclass
class OwnLease:
    """A lease this daemon holds: its token and its deadline on this daemon's monotonic clock."""

    token: str
    deadline: float
    lost: str | None = None  # why the lease is gone (set once)

    def check(self, clock: Clock) -> None:
        """Raise `RunStopped` if the lease is lost or past its deadline (no append is tried)."""
        if self.lost is None and clock.monotonic() > self.deadline:
            self.lost = "its lease expired before it was renewed (was davitd paused?)"
        if self.lost is not None:
            raise RunStopped(f"{LEASE_LOST}: {self.lost}")


@dataclass
class LeaseBook:
    """What this daemon knows of leases: its own, and when it saw each other lease last change."""

    policy: LeasePolicy
    clock: Clock
    own: dict[str, OwnLease] = field(default_factory=dict)  # run id -> lease held here
    _seen: dict[str, tuple[tuple[str | None, str | None], float]] = field(default_factory=dict)
    # tokens of leases in this daemon's name found at its start-up: its previous life's, dead
    _previous_life: set[str] = field(default_factory=set)

    def claim_event(self, view: RunView, taken_from: str | None = None) -> tuple[ev.RunClaimed, OwnLease]:
        """The claim to append for `view`, and the lease it gives once appended (the deadline
        counts from now, before the append: never later than any observer's)."""
        token = uuid.uuid4().hex
        lease = OwnLease(token, self.clock.monotonic() + self.policy.lease_seconds)
        expires = self.clock.now() + timedelta(seconds=self.policy.lease_seconds)
        event = ev.RunClaimed(
            owner=self.policy.name,
            token=token,
            lease_seconds=self.policy.lease_seconds,
            expires_at=expires.isoformat(timespec="seconds"),
            taken_from=taken_from,
        )
        return event, lease

    def renewal(self, lease: OwnLease) -> tuple[ev.LeaseRenewed, float]:
        """The renewal event and the deadline it gives once appended."""
        deadline = self.clock.monotonic() + self.policy.lease_seconds
        expires = self.clock.now() + timedelta(seconds=self.policy.lease_seconds)
        return ev.LeaseRenewed(
            owner=self.policy.name, token=lease.token, expires_at=expires.isoformat(timespec="seconds")
        ), deadline

    def observe(self, view: RunView) -> None:
        """Note the lease `view` shows now; the clock restarts when it changed since last seen."""
        key = (view.lease_token, view.lease_expires_at)
        seen = self._seen.get(view.run_id)
        if seen is None or seen[0] != key:
            self._seen[view.run_id] = (key, self.clock.monotonic())

    def forget(self, run_id: str) -> None:
        self._seen.pop(run_id, None)

    def held_elsewhere(self, view: RunView, at_start: bool = False) -> bool:
        """Whether another daemon holds a live lease on the run (it must be left alone)."""
        # (the fold clears the owner when the run enters a state no daemon works in)
        if view.owner is None or view.run_id in self.own:
            return False
        if view.owner == self.policy.name and (at_start or view.lease_token in self._previous_life):
            # a lease of this daemon's name it does not hold, found at start-up: a previous life's, dead
            self._previous_life.add(view.lease_token or "")
            return False
        # Later, a lease of this daemon's name it does not hold is a twin's (two daemons given
        # one name): taken as dead, the two would fence each other's runs at every pass.
        return not self.expired(view)

    def expired(self, view: RunView) -> bool:
        """No change of the run's lease seen for its `lease_seconds` (this daemon's clock)."""
        self.observe(view)
        _key, since = self._seen[view.run_id]
        length = view.lease_seconds or self.policy.lease_seconds
        return self.clock.monotonic() - since > length

    def takeover_due(self, view: RunView) -> bool:
        """A run some daemon worked on, whose lease is not held here and is over."""
        if view.run_id in self.own or view.state not in HELD_STATES:
            return False
        if view.owner is None and view.state is RunState.CANCELLING:
            # a daemon taking a lapsed run over to honour a cancel left to its dead owner records
            # it interrupted and cancelling, unleased, and settles it (`_take_over_cancelled`):
            # left to it for a lease's length (it may be probing whether a rollback is needed)
            return self.expired(view)
        if view.owner is None or (view.owner == self.policy.name and view.lease_token in self._previous_life):
            return True  # never leased (an older davitd's), or this daemon's previous life's
        return self.expired(view)  # (this daemon's name too: its previous life's were recovered at start-up)

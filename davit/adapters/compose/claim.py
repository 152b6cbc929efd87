"""One run at a time per compose project on a target: the claim both `compose.restore` and
`compose.migrate` take before their pre-flight checks that nothing of the project exists.

Two runs writing one project on one target (both prepared, or both past inspect, while it was
free) would otherwise both pass pre-flight, unpack into the same volumes and store and start;
the rollback of one would then remove the other's project. The claim is a symlink beside the
project's store (`<base_path>/.davit/<project>.run`) whose text names the run: `ln -s` creates it
atomically and never over one that exists, so of two runs exactly one makes it; a resumed run
finds its own and goes on. The parent is reached without following a symlink (`confined.py`).

A run that dies for good (its job removed, a cancel, a failure whose rollback could not reach
the target) leaves its claim. A later run takes it over only where the event log shows that run
ended (`RunInputs.run_ended`: a terminal state never changes). Takers of one dead claim go
one at a time: each first makes `<claim>.takeover-<hash of the dead run>` (atomically, as the
claim), and removes the claim only while it still names the dead run, which no one else can
make again; then it makes its own claim as a first run would. The rest of pre-flight still
refuses anything the dead run left of the project. A claim naming a run the log does not know
(another log's daemon, a run removed) is refused naming the run: `davit cancel RUN` ends one
this log knows, after which the next run takes the claim over.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable

from davit.adapters.compose import confined
from davit.adapters.compose.target import PreflightFailed, TargetLayout
from davit.adapters.ssh.remote import RemoteHost

q = shlex.quote


def claim_path(layout: TargetLayout) -> str:
    return layout.store + ".run"


def owner(host: RemoteHost, layout: TargetLayout) -> str | None:
    """The run named by the project's claim on the target; None when there is none."""
    found = host.run(f"readlink -- {q(claim_path(layout))}", check=False)
    return found.stdout.strip() or None if found.status == 0 else None


def take(host: RemoteHost, layout: TargetLayout, run_id: str, doing: str, ended: Callable[[str], bool]) -> str | None:
    """Claim the project for `run_id`; the run whose claim it took over (one `ended` says ended
    for good), else None. `PreflightFailed` naming the holder if another run has it (`doing`:
    what the holder does, for the message: "restoring", "migrating")."""
    claim = claim_path(layout)
    parent, name = claim.rsplit("/", 1)
    made = host.run(f"{confined.walk_into(parent, create=True)}; ln -sT {q(run_id)} {q('./' + name)}", check=False)
    if made.status == 0:
        return None
    holder = owner(host, layout)
    if holder == run_id:
        return None
    if holder is not None and ended(holder):
        marker = f"./{name}.takeover-{hashlib.sha256(holder.encode()).hexdigest()[:16]}"
        took = host.run(
            f"{confined.walk_into(parent, create=False)}; ln -sT {q(run_id)} {q(marker)} || exit 3; "
            f'if [ "$(readlink -- {q("./" + name)})" = {q(holder)} ]; then rm -f -- {q("./" + name)}; fi; '
            f"ln -sT {q(run_id)} {q('./' + name)}; s=$?; rm -f -- {q(marker)}; exit $s",
            check=False,
        )
        if took.status == 0:
            return holder
        holder = owner(host, layout)  # another taker, or a new run, was first
        if holder == run_id:
            return None
    raise PreflightFailed(
        f"pre-flight on {host.address.where} failed: another run ({holder or 'unknown'}) is {doing} project "
        f"{layout.project} there (its claim {claim}; if that run is gone for good, `davit cancel {holder or 'RUN'}` "
        "ends it and the next run takes the claim over; a run this daemon's log does not know: remove the claim)"
        + ("" if holder is not None else f": {made.stderr.strip()[-300:]}")
    )


def missing_top(host: RemoteHost, layout: TargetLayout) -> str | None:
    """The topmost directory above the claim that does not exist yet (`take` creates it): what a
    failed pre-flight removes again, so that it leaves nothing on the target."""
    parent = claim_path(layout).rsplit("/", 1)[0]
    found = host.run(
        f'p={q(parent)}; top=; while [ ! -e "$p" ] && [ ! -L "$p" ]; do top=$p; p=$(dirname "$p"); done; echo "$top"'
    )
    return found.stdout.strip() or None


def release(host: RemoteHost, layout: TargetLayout, run_id: str, made: str | None = None) -> None:
    """Remove `run_id`'s claim (never another run's); with `made` (`missing_top` before `take`),
    the directories the claim made, from its own up to `made`, while they are empty."""
    parent, name = claim_path(layout).rsplit("/", 1)
    if owner(host, layout) == run_id:
        host.run(f"{confined.walk_into(parent, create=False)}; rm -f -- {q('./' + name)}")
    if made is not None and (parent + "/").startswith(made.rstrip("/") + "/"):
        host.run(f'd={q(parent)}; while rmdir -- "$d" 2>/dev/null && [ "$d" != {q(made)} ]; do d=$(dirname "$d"); done; true')

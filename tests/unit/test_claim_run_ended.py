"""What a compose run's claim on a target is told of another run (`compose/claim.py`): the
daemon's inputs say a run ended only where its fold of the log shows a terminal state."""

from __future__ import annotations

from pathlib import Path

import anyio

from davit.adapters.runwork import RunInputs
from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.domain import events as ev
from davit.eventstore.memory import MemoryEventStore
from tests.unit.test_supervisor_memory import RUNNING, seed_run


def test_a_runs_inputs_know_a_run_ended_only_where_the_log_shows_it_ended(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryEventStore()
        await seed_run(store, "dead", *RUNNING, ev.RunFailed(error="gone", error_type="PermanentError"))
        await seed_run(store, "live", *RUNNING)
        sup = Supervisor(Parts(load_settings(tmp_path)), store, Notifier(), "test")
        try:
            await sup._load()
            ended = sup.parts.inputs(sup.runs["live"]).run_ended
            assert ended("dead") and not ended("live") and not ended("never-seen")
        finally:
            sup.parts.close()

    anyio.run(main)


def test_inputs_without_a_log_know_no_run_ended() -> None:
    inputs = RunInputs({}, "r1")
    assert not inputs.run_ended("r0") and not inputs.with_spec({}).run_ended("r0")

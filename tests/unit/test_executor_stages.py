"""The executor's table of stages agrees with the run machine: the event each stage records is
a move the machine allows from that stage's state, and following the stages from `queued`
reaches `succeeded` (and a rollback reaches `rolled_back`) without a state the table lacks."""

from __future__ import annotations

from typing import Any

import pytest

from davit.daemon.executor import RESUMED, STAGES, Stage
from davit.domain.machine import DISPATCHABLE, RunState, allowed, next_state
from davit.domain.ports import RunContext
from davit.domain.runs import RunView


class Work:
    def plan(self) -> list[str]:
        return ["copy"]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext) -> None:
        return None

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {"snapshot_id": "s1"}


def _after(state: RunState, stage: Stage) -> RunState:
    view = RunView("r1", state=state, plan=["copy"], error="cause")
    event = stage.done(view, Work(), {})
    assert event.trigger is not None and allowed(state, event.trigger), (state, type(event).__name__)
    return next_state("r1", state, event.trigger)


@pytest.mark.parametrize("state", sorted(STAGES), ids=lambda s: s.value)
def test_each_stage_records_a_move_the_machine_allows_from_its_state(state: RunState) -> None:
    _after(state, STAGES[state])


def test_a_resumed_run_restarts_with_the_move_a_first_start_records() -> None:
    assert _after(RunState.PREPARING, RESUMED) is _after(RunState.PREPARING, STAGES[RunState.PREPARING])


@pytest.mark.parametrize("start", sorted(DISPATCHABLE), ids=lambda s: s.value)
def test_from_each_state_the_dispatcher_starts_the_stages_lead_to_an_end(start: RunState) -> None:
    state, seen = start, []
    while state in STAGES:
        seen.append(state)
        state = _after(state, STAGES[state])
    assert state in {RunState.SUCCEEDED, RunState.ROLLED_BACK}, seen

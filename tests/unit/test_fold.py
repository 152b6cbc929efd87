"""A run's state is the fold of its events: replays give the same view; illegal logs are refused."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from davit.domain import events as ev
from davit.domain.errors import AlreadyCommitted, IllegalTransition
from davit.domain.machine import RunState
from davit.domain.runs import admit, fold

_positions = itertools.count(1)


def stored(events: list[ev.Event]) -> list[ev.StoredEvent]:
    return [
        ev.StoredEvent(
            position=next(_positions),
            stream="run-r1",
            version=i + 1,
            event_id=f"e{i}",
            type=e.type_name(),
            schema=1,
            data=e.model_dump(mode="json"),
            recorded_at=f"2026-01-01T00:00:{i:02d}+00:00",
        )
        for i, e in enumerate(events)
    ]


def queued(**over: Any) -> ev.RunQueued:
    return ev.RunQueued(run_id="r1", job="j", kind="files.backup", revision="rev", spec={}, reason="manual", **over)


def test_a_backup_that_succeeds_folds_to_succeeded_with_its_progress() -> None:
    view = fold(
        "r1",
        stored(
            [
                queued(),
                ev.RunPreparing(attempt=1),
                ev.RunStarted(plan=["store", "publish"]),
                ev.StepStarted(step="store"),
                ev.CheckpointRecorded(
                    step="store", cursor={"last": "a"}, chunks_written=["c1", "c2"], bytes_done=10, items_done=1
                ),
                ev.CheckpointRecorded(step="store", cursor={"last": "b"}, chunks_written=["c3"], bytes_done=30, items_done=2),
                ev.StepCompleted(step="store"),
                ev.RunVerifying(),
                ev.RunSucceeded(snapshot_id="r1"),
            ]
        ),
    )
    assert view.state is RunState.SUCCEEDED
    assert view.steps["store"].cursor == {"last": "b"}
    assert view.steps["store"].status == "done"
    assert view.steps["publish"].status == "pending"
    assert (view.bytes_done, view.items_done, view.checkpoints, view.chunks_written) == (30, 2, 2, 3)
    assert view.snapshot_id == "r1" and view.finished_at is not None


def test_an_interrupted_run_keeps_its_cursor_and_counts_the_interruption() -> None:
    view = fold(
        "r1",
        stored(
            [
                queued(),
                ev.RunPreparing(),
                ev.RunStarted(plan=["store"]),
                ev.CheckpointRecorded(step="store", cursor={"last": "x"}),
                ev.RunInterrupted(reason="kill -9"),
                ev.RunRequeued(reason="start-up"),
                ev.RunPreparing(attempt=2),
            ]
        ),
    )
    assert view.state is RunState.PREPARING
    assert view.steps["store"].cursor == {"last": "x"}
    assert view.interruptions == 1 and view.attempt == 2


def test_a_log_with_an_illegal_transition_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        fold("r1", stored([queued(), ev.RunSucceeded()]))


def test_a_checkpoint_outside_an_active_run_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        fold("r1", stored([queued(), ev.CheckpointRecorded(step="store", cursor={})]))


def test_a_checkpoint_that_lands_while_cancelling_is_kept() -> None:
    view = fold(
        "r1",
        stored(
            [
                queued(),
                ev.RunPreparing(),
                ev.RunStarted(plan=["store"]),
                ev.RunCancelling(),
                ev.CheckpointRecorded(step="store", cursor={"last": "y"}, chunks_written=["c9"]),
                ev.RunCancelled(),
            ]
        ),
    )
    assert view.state is RunState.CANCELLED and view.chunks_written == 1


def test_unknown_event_types_from_a_newer_version_are_skipped() -> None:
    items = stored([queued()])
    future = ev.StoredEvent(
        position=99,
        stream="run-r1",
        version=2,
        event_id="x",
        type="SomethingNew",
        schema=3,
        data={"a": 1},
        recorded_at="2026-01-01T00:00:00+00:00",
    )
    view = fold("r1", [*items, future])
    assert view.state is RunState.QUEUED and view.version == 2


def committed_backup(*after: ev.Event) -> list[ev.Event]:
    """A backup that stored its data and started publishing its snapshot."""
    return [
        queued(),
        ev.RunPreparing(),
        ev.RunStarted(plan=["store", "publish"]),
        ev.StepStarted(step="store"),
        ev.StepCompleted(step="store"),
        ev.StepStarted(step="publish", commits=True),
        *after,
    ]


def test_a_cancel_that_came_during_publish_is_shown_ignored_and_the_backup_succeeds() -> None:
    view = fold(
        "r1",
        stored(
            committed_backup(
                ev.CancelIgnored(reason="requested by operator", step="publish", state="running"),
                ev.StepCompleted(step="publish"),
                ev.RunVerifying(),
                ev.RunSucceeded(snapshot_id="r1"),
            )
        ),
    )
    assert view.state is RunState.SUCCEEDED and view.snapshot_id == "r1"
    assert view.committed_step == "publish"
    assert view.cancel_ignored == {"reason": "requested by operator", "step": "publish", "state": "running"}
    assert view.to_json()["cancel_ignored"]["step"] == "publish"


def test_a_log_cancelling_a_run_after_its_committing_step_started_is_refused() -> None:
    with pytest.raises(AlreadyCommitted):
        fold("r1", stored(committed_backup(ev.RunCancelling(), ev.RunCancelled())))
    # also after an interruption: the snapshot may already exist, so the resumed run must finish
    with pytest.raises(AlreadyCommitted):
        fold("r1", stored(committed_backup(ev.RunInterrupted(reason="kill -9"), ev.RunCancelling())))


def test_a_committing_step_may_not_start_once_the_run_is_cancelling() -> None:
    with pytest.raises(IllegalTransition) as err:
        fold(
            "r1",
            stored(
                [
                    queued(),
                    ev.RunPreparing(),
                    ev.RunStarted(plan=["store", "publish"]),
                    ev.RunCancelling(),
                    ev.StepStarted(step="publish", commits=True),
                ]
            ),
        )
    assert err.value.trigger == "commit:publish" and err.value.state == "cancelling"


def test_admit_refuses_before_writing_what_the_fold_would_refuse() -> None:
    view = fold("r1", stored(committed_backup()))
    with pytest.raises(AlreadyCommitted):
        admit(view, [ev.RunCancelling()])
    admit(
        view,
        [
            ev.CancelIgnored(reason="requested by operator", step="publish", state="running"),
            ev.StepCompleted(step="publish"),
            ev.RunVerifying(),
            ev.RunSucceeded(),
        ],
    )
    started = fold("r1", stored([queued(), ev.RunPreparing(), ev.RunStarted(plan=["store", "publish"])]))
    with pytest.raises(IllegalTransition):  # the cancel and the commit in one batch: the cancel came first
        admit(started, [ev.RunCancelling(), ev.StepStarted(step="publish", commits=True)])
    assert started.state is RunState.RUNNING and started.committed_step is None  # admit changes nothing


def test_a_step_started_recorded_before_commits_existed_reads_as_not_committing() -> None:
    old = stored([queued(), ev.RunPreparing(), ev.RunStarted(plan=["store", "publish"])])
    legacy = ev.StoredEvent(
        position=99,
        stream="run-r1",
        version=4,
        event_id="old",
        type="StepStarted",
        schema=1,
        data={"step": "publish"},
        recorded_at="2026-01-01T00:00:00+00:00",
    )
    view = fold("r1", [*old, legacy])
    assert view.committed_step is None and view.steps["publish"].status == "running"

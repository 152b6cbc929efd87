"""A request davitd cannot handle is recorded as `RequestFailed`, and a CLI waiting on it
hears of it at once; davitd goes on handling the requests after it.

The failing requests are appended the way another davit CLI would append them (a newer one,
talking to a davitd not yet restarted after an upgrade): one of a type this davitd does not
know, one whose run id does not decode."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from davit.daemon.cli.requests import send, wait_for_end
from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.domain.commands import RunJobNow
from tests.e2e.conftest import Davit, append_events, keyed_store, write_job

pytestmark = pytest.mark.e2e


async def wait_on(davit: Davit, run_id: str, position: int, timeout: float) -> object:
    async with keyed_store(davit) as store:
        return await wait_for_end(store, run_id, timeout, request=position)


def test_a_request_davitd_cannot_handle_is_recorded_and_ends_the_wait_at_once(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    davit.start()
    write_job(davit, "docs.toml", f'name = "docs"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    davit.wait_run_state("docs", {"succeeded", "failed"})
    [unknown] = anyio.run(append_events, davit, ev.REQUESTS_STREAM, "PruneNow", [{"run_id": "feedfacecafe", "job": "docs"}])
    [undecodable] = anyio.run(
        append_events, davit, ev.REQUESTS_STREAM, "RunJobNow", [{"job": "docs", "run_id": ["hawser-value-71"]}]
    )

    started = time.monotonic()
    outcome = anyio.run(wait_on, davit, "feedfacecafe", unknown, 60.0)
    assert isinstance(outcome, ev.RequestFailed), outcome
    assert time.monotonic() - started < 15, "the wait ended only at its timeout"
    assert "PruneNow" in outcome.reason and outcome.run_id == "feedfacecafe"

    davit.wait_for(lambda: len(davit.events("type = 'RequestFailed'")) == 2, 30, "both failures recorded")
    failed = {e[3]["position"]: e[3] for e in davit.events("type = 'RequestFailed'")}
    assert set(failed) == {unknown, undecodable}
    assert "run_id" in failed[undecodable]["reason"] and "hawser-value-71" not in failed[undecodable]["reason"]
    assert failed[undecodable]["request_type"] == "RunJobNow"
    history = [e for e in davit.history() if e["type"] == "RequestFailed"]
    assert [e["data"]["position"] for e in history] == [unknown, undecodable]

    # davitd is alive and handles the next request as usual
    after = davit.cli("run", "docs", "--wait", "--timeout", "60", check=False)
    assert after.returncode == 0, after.stderr
    assert "Traceback" not in davit.logs[-1].read_text()


def test_a_run_request_whose_handling_raises_ends_the_clis_wait_at_once(davit: Davit, tmp_path: Path) -> None:
    """The request as `davit run --wait` sends and waits on it (`send`, `wait_for_end`), and a
    handler that raises: the run id was taken by another writer, whose run stream davitd has
    not seen, so queueing the run fails its expected-version check."""
    source = tmp_path / "source"
    source.mkdir()
    davit.start()
    write_job(davit, "docs.toml", f'name = "docs"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    davit.wait_run_state("docs", {"succeeded", "failed"})

    async def request_for_a_taken_run_id() -> tuple[int, object]:
        async with keyed_store(davit) as store:
            taken = ev.RunQueued(
                run_id="0badc0ffee00", job="docs", kind="files.backup", revision="x", spec={}, reason="another writer"
            )
            await store.append(ev.run_stream("0badc0ffee00"), 0, [ev.NewEvent.of(new_event_id(), taken)])
            position = await send(store, RunJobNow(job="docs", run_id="0badc0ffee00"))
            return position, await wait_for_end(store, "0badc0ffee00", 60, request=position)

    started = time.monotonic()
    position, outcome = anyio.run(request_for_a_taken_run_id)
    assert time.monotonic() - started < 15, "the wait ended only at its timeout"
    assert isinstance(outcome, ev.RequestFailed) and outcome.position == position, outcome
    assert outcome.run_id == "0badc0ffee00" and outcome.reason

"""A reader cancelled in the middle of a query (davitd stopping while a follower reads the log, or
a second davitd refused the state lock) must not leave the process unable to exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

READERS_CANCELLED_MID_QUERY = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from davit.domain.events import NewEvent
    from davit.eventstore.sqlite import SqliteEventStore


    async def main(path: str) -> None:
        store = await SqliteEventStore(Path(path)).open()
        for s in range(10):
            events = [NewEvent(f"{s}-{i}", "Padded", {"pad": "x" * 500}) for i in range(500)]
            await store.append(f"stream-{s}", 0, events)

        async def read_forever() -> None:
            while True:
                await store.read_all(0, 5000)

        for attempt in range(12):  # cancelled at a dozen points, some of them mid-query
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_forever)
                await anyio.sleep(0.011 * attempt)
                tg.cancel_scope.cancel()
        await store.close()


    anyio.run(main, sys.argv[1])
    print("exited")
    """
)


def test_a_process_whose_log_readers_were_cancelled_mid_query_still_exits(tmp_path: Path) -> None:
    script = tmp_path / "readers.py"
    script.write_text(READERS_CANCELLED_MID_QUERY)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "log.db")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exited"

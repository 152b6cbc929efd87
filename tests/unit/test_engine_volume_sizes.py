"""The engine's volume sizes as a first volume backup's total (through a helper container):
summed only when the engine measured every selected volume, and never a figure no volume has."""

from __future__ import annotations

from typing import Any

import pytest

from davit.adapters.docker.totals import volume_sizes
from davit.domain.progress import MAX_TOTAL


@pytest.mark.parametrize(
    ("df", "total"),
    [
        ({"Volumes": [{"Name": "a", "UsageData": {"Size": 10}}, {"Name": "b", "UsageData": {"Size": 5}}]}, 15),
        ({"Volumes": [{"Name": "a", "UsageData": {"Size": 10}}, {"Name": "b", "UsageData": {"Size": -1}}]}, None),
        ({"Volumes": [{"Name": "a", "UsageData": {"Size": 10}}]}, None),
        ({"Volumes": [{"Name": "a", "UsageData": {"Size": True}}, {"Name": "b", "UsageData": {"Size": 5}}]}, None),
        ({"Volumes": [{"Name": "a", "UsageData": {"Size": MAX_TOTAL}}, {"Name": "b", "UsageData": {"Size": 5}}]}, None),
        ({"Volumes": None}, None),
        ({"Volumes": ["junk", {"Name": "a"}]}, None),
    ],
    ids=["both-measured", "one-not-measured", "one-missing", "a-bool", "beyond-a-count", "no-volumes", "junk"],
)
def test_an_engines_volume_sizes_count_only_when_every_volume_was_measured(df: dict[str, Any], total: int | None) -> None:
    assert volume_sizes(df, ["a", "b"]) == total

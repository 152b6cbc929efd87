"""Durations written the way operators write them in job files: `90m`, `26h`, `7d`, `1d12h`.

Used where a job states how old its last success may grow (`max_age`) before the job counts as
stale; a bare number is refused because its unit would be a guess.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d{1,6})([smhdw])")
_WHOLE = re.compile(r"(?:\d{1,6}[smhdw]){1,5}")


def parse_duration(text: str) -> int:
    """Seconds in `text`; ValueError naming the accepted form when it is not one."""
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration (e.g. '90m', '26h', '7d', '1d12h')")
    seconds = sum(int(count) * _UNITS[unit] for count, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"{text!r} is no time at all")
    return seconds

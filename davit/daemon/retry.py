"""Backoff for retryable failures: exponential, capped, with full jitter in the upper half."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from davit.daemon.config import RetrySection


def retry_at(policy: RetrySection, attempt: int, now: datetime, rng: random.Random | None = None) -> datetime:
    base = min(policy.max_seconds, policy.initial_seconds * 2 ** max(attempt - 1, 0))
    jitter = (rng or random.Random()).uniform(0.5, 1.0)
    return now + timedelta(seconds=base * jitter)

"""Which snapshots a retention policy keeps: the union of keep_last and the newest snapshot of
each of the last N days, ISO weeks and months (the same reading as restic and borg)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from davit.domain.jobs import Retention


def snapshots_to_keep(snapshots: Sequence[tuple[str, str]], policy: Retention) -> set[str]:
    """`snapshots` are (id, ISO created_at); returns the ids to keep. An empty policy keeps all."""
    if policy.is_empty():
        return {sid for sid, _ in snapshots}
    newest_first = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    keep: set[str] = set()
    if policy.keep_last:
        keep.update(sid for sid, _ in newest_first[: policy.keep_last])
    buckets = (
        (policy.keep_daily, lambda d: d.strftime("%Y-%m-%d")),
        (policy.keep_weekly, lambda d: "{}-W{:02d}".format(*d.isocalendar()[:2])),
        (policy.keep_monthly, lambda d: d.strftime("%Y-%m")),
    )
    for count, bucket_of in buckets:
        if not count:
            continue
        seen: list[str] = []
        for sid, created in newest_first:
            bucket = bucket_of(datetime.fromisoformat(created))
            if bucket not in seen:
                seen.append(bucket)
                if len(seen) > count:
                    break
                keep.add(sid)
    return keep

"""The hash chain: each event's hash covers the previous event's hash and its own content."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(
    prev_hash: str,
    position: int,
    event_id: str,
    stream: str,
    version: int,
    type_: str,
    schema: int,
    data: str,
    recorded_at: str,
) -> str:
    h = hashlib.sha256()
    for part in (prev_hash, str(position), event_id, stream, str(version), type_, str(schema), data, recorded_at):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()

"""The hash chain: each event's hash covers the previous event's hash and its own content.

Two kinds of link. A plain link is SHA-256 over the fields: anyone can recompute it, so it
only shows accidents and clumsy edits. A keyed link is HMAC-SHA256 under the log key, which
lives outside the state directory: whoever can write `davit.db` but cannot read the key can
no longer edit an event and recompute the chain after it.

A log that existed before it had a key keeps its plain prefix; the first keyed event is a
marker (`MARKER_TYPE` on `MARKER_STREAM`) whose keyed hash covers the last plain hash, so
the prefix cannot be rewritten either, and every event after the marker must be keyed. The
chain head (`chain_head`) of a keyed log carries `head_mac`, so removing the newest events
and rewinding the head needs the key too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

MARKER_STREAM = "log"
MARKER_TYPE = "LogKeyed"
KEY_BYTES = 32

# Domain separation: a keyed event hash can never be taken for a head MAC or the key id.
_EVENT_TAG = b"davit-log-event-v1\x1f"
_HEAD_TAG = b"davit-log-head-v1\x1f"
_KEY_ID_TAG = b"davit-log-key-id-v1"


@dataclass(frozen=True)
class ChainReport:
    """What a check of a store's chain found: `ok`, how many events it checked, and if broken
    the first bad position and why (every store's `verify_chain` answers with one)."""

    ok: bool
    checked: int
    first_bad_position: int | None = None
    reason: str | None = None
    keyed_from: int | None = None  # the marker's position: events from it on are keyed


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fields(
    prev_hash: str,
    position: int,
    event_id: str,
    stream: str,
    version: int,
    type_: str,
    schema: int,
    data: str,
    recorded_at: str,
) -> bytes:
    out = bytearray()
    for part in (prev_hash, str(position), event_id, stream, str(version), type_, str(schema), data, recorded_at):
        out += part.encode()
        out += b"\x1f"
    return bytes(out)


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
    key: bytes | None = None,
) -> str:
    """The link of one event: plain SHA-256 without `key`, HMAC-SHA256 under it."""
    fields = _fields(prev_hash, position, event_id, stream, version, type_, schema, data, recorded_at)
    if key is None:
        return hashlib.sha256(fields).hexdigest()
    return hmac.new(key, _EVENT_TAG + fields, hashlib.sha256).hexdigest()


def head_mac(key: bytes, position: int, hash_: str) -> str:
    """The seal of a keyed log's head: without the key nobody can move the head back."""
    return hmac.new(key, _HEAD_TAG + f"{position}\x1f{hash_}".encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A public name for a key (it reveals nothing of it), recorded in the marker event so a
    verifier can tell "another key" from "edited"."""
    return hmac.new(key, _KEY_ID_TAG, hashlib.sha256).hexdigest()[:16]


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two hex digests (None equals nothing)."""
    return a is not None and b is not None and hmac.compare_digest(a, b)

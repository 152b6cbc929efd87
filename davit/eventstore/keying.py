"""What the stores (SQLite, PostgreSQL, memory) share of the keyed chain (`davit/eventstore/chain.py`):
the row an event becomes, the key a batch is linked with, the marker that seals a log under
its key, the checks of a writer that may not seal, and the walk `verify_chain` makes.

A store supplies the I/O (its SQL, its transaction, its lock) and names itself by `where` (a
file, or `postgresql host:port/database`); the decisions and the messages are made here once,
so a log keyed on one store is keyed, refused and verified the same way on the other.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from davit.domain.events import NewEvent
from davit.eventstore.chain import MARKER_STREAM, MARKER_TYPE, ChainReport, canonical_json, event_hash, head_mac, key_id, same
from davit.eventstore.logkey import LogKey, LogKeyError
from davit.eventstore.schema import GENESIS_HASH
from davit.eventstore.sqlreads import json_object


def chain_row(
    new: NewEvent, stream: str, version: int, position: int, prev_hash: str, recorded_at: str, secret: bytes | None
) -> tuple[Any, ...]:
    """The row of one event in `INSERT` order, its hash (keyed under `secret`, if any) last."""
    data = canonical_json(new.data)
    digest = event_hash(prev_hash, position, new.event_id, stream, version, new.type, new.schema, data, recorded_at, secret)
    return (position, new.event_id, stream, version, new.type, new.schema, data, recorded_at, prev_hash, digest)


def seal_head(secret: bytes | None, position: int, hash_: str) -> str | None:
    """The head's `mac` after a write: the key's seal in a keyed log, NULL in a plain one."""
    return None if secret is None else head_mac(secret, position, hash_)


def link_key(where: object, mac: str | None, key: LogKey | None) -> bytes | None:
    """The key new events are linked with: a keyed log (its head sealed) needs the key. Decided
    inside the write transaction from the head it read, so an append racing the sealing is
    keyed too."""
    if mac is None:
        return None
    if key is None:
        raise LogKeyError(f"the event log {where} is keyed and this process has no log key")
    return key.secret


def rolled_back(where: object, key: LogKey) -> str:
    """Why a log without a key marker is refused under a key its writer marked sealed."""
    return (
        f"the event log {where} was sealed under the key {key.path} but its keyed part is gone: "
        "rolled back or truncated (if the log was replaced on purpose, move the key aside)"
    )


def marker_to_write(where: object, key: LogKey, marker_data: dict[str, Any] | None, head: tuple[int, str]) -> NewEvent | None:
    """Sealing a log under `key` (davitd's start, under the store's write lock): the marker event
    to append at the head, or None if the log is already keyed with `key`. `marker_data` is the
    data of the log's first marker (None: there is none).
    `LogKeyError` if the log is keyed with another key, or is not the log the key was made for."""
    if marker_data is not None:
        if marker_data.get("key_id") != key_id(key.secret):
            raise LogKeyError(
                f"the event log {where} was keyed with another key than {key.path}; restore the key it was keyed with"
            )
        return None
    position, prev_hash = head
    if key.seal_done:
        # Its writer sealed the log under this key once: a log without the marker lost its
        # keyed part, even with the head back at exactly the sealed pair. Sealing it again
        # would hide that for good.
        raise LogKeyError(rolled_back(where, key))
    if key.sealed is not None and key.sealed != (position, prev_hash):
        raise LogKeyError(
            f"the event log {where} (head at position {position}) is not the log the key {key.path} "
            f"was made for (head at position {key.sealed[0]}): its keyed part may have been removed. "
            "If the log was replaced on purpose, move the key aside and start davitd again"
        )
    return NewEvent(
        uuid.uuid4().hex, MARKER_TYPE, {"key_id": key_id(key.secret), "plain_events": position, "plain_head": prev_hash}
    )


def check_writer_key(where: object, sealed: bool, key: LogKey | None, key_path: Path | None) -> None:
    """A writer that may not seal (the CLI's requests): the log's keying must already match its key."""
    if sealed and key is None:
        raise LogKeyError(f"the event log {where} is keyed and there is no log key at {key_path or 'the configured path'}")
    if not sealed and key is not None and key.seal_done:
        raise LogKeyError(rolled_back(where, key))
    if not sealed and key is not None:
        # Only davitd's seal may come next: a plain event appended now would move the head
        # away from the one the key was made to seal, and davitd would refuse it.
        raise LogKeyError(f"the event log {where} is not sealed with the key {key.path} yet; start davitd once first")


class ChainWalk:
    """`verify_chain`'s check, fed the rows in position order (`row`), then the head (`head`).

    Events up to the key marker are plain links, the marker and every event after it keyed
    links (which needs `key`: `LogKeyError` naming the key path without it), and a keyed log's
    head must carry the key's seal. With a key, a log with no marker is broken: its keyed
    part was removed (or the key made and davitd not started since)."""

    def __init__(self, where: object, key: LogKey | None, key_path: Path | None) -> None:
        self.where = where
        self.key = key
        self.key_path = key_path
        self.prev_hash = GENESIS_HASH
        self.expected = 1
        self.checked = 0
        self.secret: bytes | None = None
        self.keyed_from: int | None = None

    def row(self, row: Any) -> ChainReport | None:
        """Check one row (with the `events` columns as attributes); a report if it breaks the chain."""
        if row.position != self.expected:
            return ChainReport(False, self.checked, self.expected, "event missing (gap in positions)", self.keyed_from)
        if row.prev_hash != self.prev_hash:
            return ChainReport(False, self.checked, row.position, "previous hash does not match", self.keyed_from)
        if self.keyed_from is None and row.stream == MARKER_STREAM and row.type == MARKER_TYPE:
            if self.key is None:
                raise LogKeyError(
                    f"the event log {self.where} is keyed (from position {row.position}) and "
                    f"there is no log key at {self.key_path or 'the configured path'} to verify it"
                )
            self.secret, self.keyed_from = self.key.secret, row.position
        digest = event_hash(
            self.prev_hash,
            row.position,
            row.event_id,
            row.stream,
            row.version,
            row.type,
            row.schema,
            row.data,
            row.recorded_at,
            self.secret,
        )
        if not same(digest, row.hash):
            reason = "content does not match its hash"
            if row.position == self.keyed_from and json_object(row.data, row.position).get("key_id") != key_id(
                self.secret or b""
            ):
                reason = f"the log was keyed with another key than {self.key.path if self.key else '?'}"
            return ChainReport(False, self.checked, row.position, reason, self.keyed_from)
        self.prev_hash, self.expected, self.checked = digest, self.expected + 1, self.checked + 1
        return None

    def head(self, position: int, hash_: str, mac: str | None) -> ChainReport:
        """The report once every row passed, given the stored chain head."""
        if position != self.expected - 1 or hash_ != self.prev_hash:
            return ChainReport(False, self.checked, self.expected, "newest events missing (chain head ahead)", self.keyed_from)
        if self.secret is not None and not same(mac, head_mac(self.secret, position, hash_)):
            return ChainReport(
                False, self.checked, self.expected, "chain head not sealed by the key (newest events removed?)", self.keyed_from
            )
        if self.secret is None and self.key is not None and self.key.seal_done:
            return ChainReport(False, self.checked, self.expected, rolled_back(self.where, self.key), None)
        if self.secret is None and self.key is not None:
            return ChainReport(
                False,
                self.checked,
                self.expected,
                f"no key marker though the key {self.key.path} exists: the log's keyed part was removed "
                "or the log replaced (or davitd has not started since the key was made)",
                None,
            )
        return ChainReport(True, self.checked, keyed_from=self.keyed_from)

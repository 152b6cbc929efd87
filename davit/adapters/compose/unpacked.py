"""What the target already holds of an item: the record of a complete unpack, so a repeat writes nothing.

A migration repeated on unchanged data (a retried or resumed run whose item was unpacked but
not yet checkpointed, or a second pass into the same target) would otherwise unpack the whole
item again. After an unpack that ended well, the target files a record in the store
(`<store>/unpacked/<key>`, the key naming the unpack command: destination, volume, image):
the identity of the tar stream unpacked (`stream_id`: the sha256 of its chunk list, which names
every byte of it) and the sha256 of a listing of the destination taken afterwards (`LISTING`:
per entry its ctime and mtime in nanoseconds, inode, size, type and mode, owner, link count
and name). A later pass of the same stream recomputes the listing first; if it is the
recorded one, nothing is unpacked and nothing written.

Why this never trusts a mix. Any write to an entry moves its ctime (which no user can set
back), a replaced file has another inode, and the listing is recomputed at every check, so a
destination touched in any way since the record (by someone, or by an unpack cut short by a
kill -9, at any instant) no longer matches it: it is unpacked again, whole. The record is
removed before an unpack starts and written (temporary name, then rename) only after the
unpack exited 0 *and* the sender's closing line (`END <count> <stream>`) arrived, so a stream
cut at a tar member boundary, which `tar x` would take as complete, leaves no record either.
A listing is not recorded where a later change could keep its ctime (git's "racy clean"
rule): when any entry changed less than `RACY_S` before the listing began (measured against
a file stamped by the same kernel clock just before the walk), or when no entry shows a
sub-second timestamp (a file system with coarse timestamps). Nothing here drops a sync: the
record is no stronger a claim than the import checkpoint the run records after the same
unpack, and a destination whose data a power loss took back has other ctimes or sizes.
"""

from __future__ import annotations

import hashlib
import shlex

from davit.adapters.compose import tarindex

RECORDS = "unpacked"  # under the store, next to `chunks/` and `tars/`
RACY_S = 0.05  # an entry changed less than this before the listing: no record
SETTLE_S = 0.1  # waited after an unpack before the listing, so its last writes are not racy
# One line per entry, the name last (a name holding `|` cannot shift the fields before it).
# GNU and BusyBox `stat` both print %z/%y with nanoseconds, and take `find -exec ... +`.
FORMAT = "%Z|%z|%y|%i|%s|%f|%u|%g|%h|%n"
q = shlex.quote

# Exits 1 when an entry changed within RACY_S of the stamp `t` (`%Z|%z` of a file made just
# before the walk), when a timestamp has no fraction to read, or when none has a non-zero one.
_RACY_AWK = (
    'function ts(s, z,  p) { p = index(z, "."); if (p == 0) { bad = 1; return 0 }; return s + ("0" substr(z, p, 10)) } '
    f'BEGIN {{ split(t, x, "|"); lim = ts(x[1], x[2]) - {RACY_S} }} '
    '{ if (ts($1, $2) >= lim) bad = 1; p = index($2, "."); if (p > 0 && substr($2, p, 10) != ".000000000") fine = 1 } '
    "END { exit (bad || !fine) ? 1 : 0 }"
)


def stream_id(ids: list[str], plain_bytes: int) -> str:
    """The identity of a tar stream made of the chunks `ids` (in order): it names every byte.
    It is the sha256 of the stream's recorded list (`tarindex.body`), so the target can name
    the stream of a list it holds without davit reading the list first."""
    return hashlib.sha256(tarindex.body(ids, plain_bytes).encode()).hexdigest()


def record_path(store: str, unpack: str, walker: str) -> str:
    key = hashlib.sha256(f"{unpack}\n{walker}".encode()).hexdigest()
    return f"{store}/{RECORDS}/{key}"


def listing_command(directory: str, member: str = ".") -> str:
    """Print the listing of `member` (and what lies under it) inside `directory`; no link followed."""
    return f"cd {q(directory)} && find {q(member)} -exec stat -c {q(FORMAT)} {{}} +"


def snap_function(walker: str) -> str:
    """A shell function `snap` printing the sha256 of the destination's listing (made by
    `walker`), failing where the listing cannot be trusted to show a later change."""
    return (
        "snap() { l=$(mktemp) || return 1; "
        ': > "$l.stamp" && t=$(stat -c \'%Z|%z\' "$l.stamp") && '
        f'({walker}) > "$l" 2>/dev/null && awk -F\'|\' -v t="$t" {q(_RACY_AWK)} "$l" && '
        'd=$(sha256sum < "$l") && printf \'%s\\n\' "${d%% *}"; r=$?; rm -f "$l" "$l.stamp"; return $r; }; '
    )


def check_command(listed: str, record: str, walker: str) -> str:
    """Print the list of chunks filed at `listed` (`tarindex`), preceded by a line `unchanged`
    where the destination still holds that stream as recorded: one round trip tells davit
    both what the stream is and that nothing needs writing."""
    return (
        snap_function(walker)
        + f"l={q(listed)}; rec={q(record)}; "
        + 'if [ -s "$l" ] && [ -s "$rec" ] && d=$(snap) && s=$(sha256sum < "$l") && '
        + '[ "$(cat "$rec")" = "${s%% *} $d" ]; then echo unchanged; fi; cat "$l" 2>/dev/null; true'
    )

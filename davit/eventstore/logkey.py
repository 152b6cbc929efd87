"""The log key file: the HMAC key of the hash chain, kept outside the state directory.

The file is TOML, made 0400 by davitd (or `davitd --make-log-key`) when it is missing:

    key = "<64 hex digits>"
    sealed_position = 41
    sealed_hash = "<hex>"
    sealed = true

`sealed_*` name the head of the log at the moment the key was made: the plain prefix the
key's marker event will seal. davitd seals a log that has no marker only if its head is
still exactly that, so someone who removes the keyed part of a log (back to plain events
only) and rewrites the plain part cannot get the next start to bless it.

`sealed = true` is written by the key's writer (davitd with `--home`, or `davitd
--make-log-key` as root) once the marker is committed, replacing the file atomically. From
then on nobody seals again under this key: a log without its marker is one whose keyed part
was removed, even if its head is back at exactly the sealed pair (without this record, the
next start would seal such a log again and the removal would leave no trace). Until then
(a crash between making the key and sealing) the writer finishes the sealing at its next
start. A file holding only 64 hex digits (a key provisioned some other way, e.g. a systemd
credential) is accepted too; it pins nothing.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from davit.domain.errors import EXIT_USAGE, DavitError
from davit.eventstore.boundedread import TooLarge, read_bounded
from davit.eventstore.chain import KEY_BYTES

MAX_KEY_FILE = 4096
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


class LogKeyError(DavitError):
    """The log key is missing where it is needed, unreadable or malformed."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class LogKey:
    path: Path
    secret: bytes
    sealed: tuple[int, str] | None = None  # the plain head this key was made to seal
    seal_done: bool = False  # its writer sealed the log under it: nobody seals again

    @property
    def needs_sealing_mark(self) -> bool:
        """A key with a record whose writer has not marked it sealed yet."""
        return self.sealed is not None and not self.seal_done

    def __repr__(self) -> str:  # never the secret, in a traceback or a log line
        return f"LogKey(path={str(self.path)!r}, sealed={self.sealed!r}, seal_done={self.seal_done!r})"


def read_log_key(path: Path) -> LogKey | None:
    """The key at `path`, or None if there is no file; `LogKeyError` if it cannot be used."""
    try:
        # O_NONBLOCK: a FIFO planted at the key's path must not hang davitd's start or a
        # `davit log verify`; fstat then refuses it. O_NOFOLLOW: a symlink planted at the key's
        # name would have davit read (and, marking it sealed, replace) a file of someone else's
        # choosing; the key is named by the file itself.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LogKeyError(f"log key {path} is a symbolic link: name the key file itself") from None
        raise LogKeyError(f"log key {path} is unreadable: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LogKeyError(f"log key {path} is not a regular file")
        if st.st_mode & 0o027:
            # As ssh does with a private key: whoever else can read it can forge the log. A
            # group may read it (operators who run `davit log verify`; an ACL shows as that).
            raise LogKeyError(
                f"log key {path} is readable by others or writable by its group (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): chmod 0400 it"
            )
        raw = read_bounded(fd, MAX_KEY_FILE, "a log key")
    except TooLarge as exc:
        raise LogKeyError(f"log key {path} is not a davit log key ({exc})") from None
    except OSError as exc:
        raise LogKeyError(f"log key {path} is unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return _parse(path, raw)


def _parse(path: Path, raw: bytes) -> LogKey:
    text = raw.decode("utf-8", "replace").strip()
    if _HEX_KEY.fullmatch(text):
        return LogKey(path, bytes.fromhex(text))
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):  # RecursionError: brackets nested deep
        doc = {}
    key = doc.get("key")
    if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
        # The reason never quotes the file: it is a secret.
        raise LogKeyError(f'log key {path} is not a davit log key (need key = "<64 hex digits>")')
    position, hash_ = doc.get("sealed_position"), doc.get("sealed_hash")
    sealed = (position, hash_) if isinstance(position, int) and isinstance(hash_, str) else None
    # `sealed = true` only counts with the pair it refers to; anything but the boolean true is "not yet".
    return LogKey(path, bytes.fromhex(key), sealed, sealed is not None and doc.get("sealed") is True)


def _body(secret: bytes, sealed: tuple[int, str], seal_done: bool) -> bytes:
    return (
        "# davit's event-log key: the HMAC key of its hash chain. Keep it secret, keep it off the\n"
        "# state directory, back it up apart from the log. Without it `davit log verify` cannot\n"
        "# check the log and davitd will not append to it.\n"
        f'key = "{secret.hex()}"\n'
        f"sealed_position = {sealed[0]}\n"
        f'sealed_hash = "{sealed[1]}"\n'
        f"sealed = {'true' if seal_done else 'false'}\n"
    ).encode()


def _write_temp(path: Path, body: bytes) -> Path:
    """`body` in a new 0400 file beside `path`, on disk (fsync) before it is linked or renamed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def create_log_key(path: Path, sealed: tuple[int, str]) -> LogKey:
    """Make a new key file at `path` (0400, never replacing one): the key that will seal the
    log whose head is `sealed`, not marked sealed yet. If another process made one first,
    that one is returned."""
    secret = secrets.token_bytes(KEY_BYTES)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temp(path, _body(secret, sealed, seal_done=False))
        try:
            os.link(tmp, path)  # never replaces an existing key, unlike rename
        except FileExistsError:
            existing = read_log_key(path)
            if existing is None:
                raise
            return existing
        _fsync_dir(path.parent)
    except OSError as exc:
        raise LogKeyError(
            f"cannot create the log key {path}: {exc.strerror or exc} (create it as root with "
            "`davitd --make-log-key`, or provide it as the systemd credential log.key)"
        ) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return LogKey(path, secret, sealed)


def can_rewrite(key: LogKey) -> bool:
    """Whether this process may replace the key file (a new file in its directory, renamed
    over it). davitd under systemd's `ProtectSystem=strict` may not: /etc is read-only there."""
    return os.access(key.path.parent, os.W_OK | os.X_OK)


def mark_log_key_sealed(key: LogKey) -> LogKey:
    """Record in the key file that its writer has sealed the log (`sealed = true`): a new 0400
    file in the same directory, fsynced, renamed over the key, the directory fsynced. The
    file must still hold this key (never overwrite a key someone put there meanwhile)."""
    if key.sealed is None:
        raise LogKeyError(f"log key {key.path} has no sealed_position/sealed_hash to mark sealed")
    current = read_log_key(key.path)
    if current is None or current.secret != key.secret or current.sealed != key.sealed:
        raise LogKeyError(f"log key {key.path} changed while davit was sealing the log with it; start davitd again")
    if current.seal_done:
        return current
    tmp: Path | None = None
    try:
        tmp = _write_temp(key.path, _body(key.secret, key.sealed, seal_done=True))
        os.rename(tmp, key.path)
        tmp = None
        _fsync_dir(key.path.parent)
    except OSError as exc:
        raise LogKeyError(
            f"cannot record in the log key {key.path} that the log is sealed: {exc.strerror or exc} "
            "(run `davitd --make-log-key` as root, as the systemd unit does in ExecStartPre=+)"
        ) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return LogKey(key.path, key.secret, key.sealed, seal_done=True)

"""Optional encryption of a repository: AES-256-GCM for chunks and snapshot trees.

A repository is encrypted when it is created with a passphrase. Its `config.json` then holds
the scrypt salt and cost and a key check (a known text sealed with the derived key), so a
wrong passphrase is refused at open, before anything is read or written, and never mistaken
for corruption. Two keys are derived from the passphrase with HKDF: one seals data, one names
chunks. A chunk's id in an encrypted repository is HMAC-SHA256 of its plain bytes under the
naming key, not their bare sha256: identical content still deduplicates, but the ids in the
index and in trees say nothing about the content to someone without the passphrase.

A sealed blob is `nonce (12 bytes) || ciphertext || tag`; its associated data is the chunk id
(or the snapshot id for a tree), so a blob moved to another id fails to open.

What stays readable without the passphrase: snapshot manifests (job, kind, times, stats, the
source's description) so `davit snapshots` lists them, pack indexes (ids, sizes), and the
staging tree of a backup that is still in progress.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from domain.errors import PermanentError

CIPHER = "aes-256-gcm"
_NONCE = 12
_CHECK_TEXT = b"davit repository key check v1"
_DEFAULT_COST = {"n": 2**15, "r": 8, "p": 1}


class RepositoryKeyError(PermanentError):
    """The repository's passphrase is missing, wrong, or given for an unencrypted repository."""


class SealedBlobError(Exception):
    """A sealed blob did not open: it was altered, truncated or stored under another id."""


class RepositoryKey:
    def __init__(self, master: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"davit repository keys v1").derive(master)
        self._aead = AESGCM(derived[:32])
        self._id_key = derived[32:]

    # --- creating and opening ----------------------------------------------------------------

    @classmethod
    def create(cls, passphrase: str, cost: dict[str, int] | None = None) -> tuple[RepositoryKey, dict[str, Any]]:
        """A new key for `passphrase` and the `encryption` section of the repository config."""
        salt = os.urandom(16)
        cost = dict(cost or _DEFAULT_COST)
        key = cls(_stretch(passphrase, salt, cost))
        section = {
            "cipher": CIPHER,
            "kdf": "scrypt",
            "salt": _b64(salt),
            **cost,
            "check": _b64(key.seal(_CHECK_TEXT, b"check")),
        }
        return key, section

    @classmethod
    def open(cls, passphrase: str, section: dict[str, Any], where: str) -> RepositoryKey:
        if section.get("cipher") != CIPHER or section.get("kdf") != "scrypt":
            raise RepositoryKeyError(f"{where}: encryption {section.get('cipher')!r} is not supported")
        cost = {k: int(section[k]) for k in ("n", "r", "p")}
        key = cls(_stretch(passphrase, base64.b64decode(section["salt"]), cost))
        try:
            if key.open_sealed(base64.b64decode(section["check"]), b"check") != _CHECK_TEXT:
                raise SealedBlobError("key check text differs")
        except SealedBlobError:
            raise RepositoryKeyError(f"{where}: the passphrase does not open this repository") from None
        return key

    # --- use ---------------------------------------------------------------------------------

    def chunk_id(self, plain: bytes | memoryview) -> bytes:
        return hmac.digest(self._id_key, plain, "sha256")

    def seal(self, data: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, associated)

    def open_sealed(self, blob: bytes, associated: bytes) -> bytes:
        if len(blob) < _NONCE + 16:
            raise SealedBlobError("too short to be a sealed blob")
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], associated)
        except InvalidTag:
            raise SealedBlobError("authentication failed") from None


def _stretch(passphrase: str, salt: bytes, cost: dict[str, int]) -> bytes:
    if not passphrase:
        raise RepositoryKeyError("the repository passphrase is empty")
    return Scrypt(salt=salt, length=32, n=cost["n"], r=cost["r"], p=cost["p"]).derive(passphrase.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain_chunk_id(plain: bytes | memoryview) -> bytes:
    return hashlib.sha256(plain).digest()

"""Optional encryption of a repository: AES-256-GCM for chunks and snapshot trees.

A repository is encrypted when it is created with a passphrase. Its data key is random (32
bytes); `config.json` holds it sealed under a key stretched from the passphrase with scrypt
(salt and cost alongside), so a wrong passphrase is refused at open, before anything is read
or written, and never mistaken for corruption, and changing the passphrase rewrites only that
one sealed key. Two keys are derived from the data key with HKDF: one seals data, one names
chunks. A chunk's id in an encrypted repository is HMAC-SHA256 of its plain bytes under the
naming key, not their bare sha256: identical content still deduplicates, but the ids in the
index and in trees say nothing about the content to someone without the passphrase.

A sealed blob is `nonce (12 bytes) || ciphertext || tag`; its associated data is the chunk id
(or the snapshot id for a tree), so a blob moved to another id fails to open.

What stays readable without the passphrase: snapshot manifests (job, kind, times, stats, the
source's description) so `davit snapshots` lists them, pack indexes (ids, sizes), and the
staging tree of a backup that is still in progress.

A manifest is readable but not forgeable: a third key derived from the data key (HKDF, its own
`info`) authenticates it with HMAC-SHA256 over its canonical JSON (sorted keys, no spaces,
ASCII) without the `mac` field, bound to the snapshot id (the directory it is stored in). With
the key, a manifest whose `mac` is missing or does not verify is not trusted (listed as
damaged); without it a listing can only say the manifest is unverified.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from davit.domain.errors import EXIT_USAGE, PermanentError

CIPHER = "aes-256-gcm"
_NONCE = 12
_WRAP_CONTEXT = b"davit repository key v1"
_DEFAULT_COST = {"n": 2**15, "r": 8, "p": 1}
# The costs a config.json may ask for: anyone who can write the repository (a bucket shared
# with another tenant) can write them, and scrypt with n=2**30 takes 1 TiB, p=2**30 forever.
_MAX_SCRYPT_BYTES = 1 << 30  # 128 * n * r: 32 MiB by default
_MAX_SCRYPT_P = 16
_MANIFEST_KEY_INFO = b"davit manifest mac v1"
_CHUNKER_SEED_INFO = b"davit chunker seed v1"
_MANIFEST_CONTEXT = b"davit manifest v1\0"
MANIFEST_MAC_FIELD = "mac"


class RepositoryKeyError(PermanentError):
    """The repository's passphrase is missing, wrong, or given for an unencrypted repository."""

    exit_code = EXIT_USAGE  # the configuration names the wrong secret: an operator fixes it


class SealedBlobError(Exception):
    """A sealed blob did not open: it was altered, truncated or stored under another id."""


class RepositoryKey:
    def __init__(self, master: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"davit repository keys v1").derive(master)
        self._aead = AESGCM(derived[:32])
        self._id_key = derived[32:]
        # a key of its own, so a MAC of a manifest is never a valid chunk id or the reverse
        self._manifest_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MANIFEST_KEY_INFO).derive(master)

    # --- creating and opening ----------------------------------------------------------------

    @classmethod
    def create(cls, passphrase: str, cost: dict[str, int] | None = None) -> tuple[RepositoryKey, dict[str, Any]]:
        """A new random key and the `encryption` section of the repository config that holds it
        sealed under `passphrase`."""
        master = os.urandom(32)
        return cls(master), _wrap(master, passphrase, dict(cost or _DEFAULT_COST))

    @classmethod
    def open(cls, passphrase: str, section: dict[str, Any], where: str) -> RepositoryKey:
        return cls(_unwrap(passphrase, section, where))

    @staticmethod
    def rewrap(old_passphrase: str, new_passphrase: str, section: dict[str, Any], where: str) -> dict[str, Any]:
        """The `encryption` section with the same key, sealed under `new_passphrase` instead."""
        master = _unwrap(old_passphrase, section, where)
        return _wrap(master, new_passphrase, _cost(section, where))

    # --- use ---------------------------------------------------------------------------------

    def chunker_seed(self) -> int:
        """The seed of this repository's FastCDC gear table (`chunking.py`): with the public
        table, the lengths of chunks, readable in the pack indexes, would tell someone without
        the passphrase whether a file they know is stored (as restic and borg key their chunkers).
        62 bits: pyfastcdc shifts it left once into 64."""
        seed = HKDF(algorithm=hashes.SHA256(), length=8, salt=None, info=_CHUNKER_SEED_INFO).derive(self._id_key)
        return int.from_bytes(seed, "little") & ((1 << 62) - 1) or 1

    def chunk_id(self, plain: bytes | memoryview) -> bytes:
        return hmac.digest(self._id_key, plain, "sha256")

    def manifest_mac(self, snapshot_id: str, manifest: dict[str, Any]) -> str:
        """The MAC (hex) of a manifest: every field but `mac` itself, bound to `snapshot_id`."""
        body = {k: v for k, v in manifest.items() if k != MANIFEST_MAC_FIELD}
        message = _MANIFEST_CONTEXT + snapshot_id.encode() + b"\0" + canonical_json(body)
        return hmac.new(self._manifest_key, message, "sha256").hexdigest()

    def manifest_authentic(self, snapshot_id: str, manifest: dict[str, Any]) -> bool:
        given = manifest.get(MANIFEST_MAC_FIELD)
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self.manifest_mac(snapshot_id, manifest).encode())

    def seal(self, data: bytes | memoryview, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, associated)

    def open_sealed(self, blob: bytes, associated: bytes) -> bytes:
        if len(blob) < _NONCE + 16:
            raise SealedBlobError("too short to be a sealed blob")
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], associated)
        except InvalidTag:
            raise SealedBlobError("authentication failed") from None


def _wrap(master: bytes, passphrase: str, cost: dict[str, int]) -> dict[str, Any]:
    salt = os.urandom(16)
    nonce = os.urandom(_NONCE)
    wrapped = nonce + AESGCM(_stretch(passphrase, salt, cost)).encrypt(nonce, master, _WRAP_CONTEXT)
    return {"cipher": CIPHER, "kdf": "scrypt", "salt": _b64(salt), **cost, "key": _b64(wrapped)}


def _unwrap(passphrase: str, section: dict[str, Any], where: str) -> bytes:
    if section.get("cipher") != CIPHER or section.get("kdf") != "scrypt":
        raise RepositoryKeyError(f"{where}: encryption {section.get('cipher')!r} is not supported")
    cost = _cost(section, where)
    try:
        wrapped = base64.b64decode(section["key"], validate=True)
        salt = base64.b64decode(section["salt"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise RepositoryKeyError(f"{where}: the encryption section of its config.json is damaged (key or salt)") from None
    kek = _stretch(passphrase, salt, cost)
    try:
        return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_CONTEXT)
    except InvalidTag:
        raise RepositoryKeyError(f"{where}: the passphrase does not open this repository") from None


def _cost(section: dict[str, Any], where: str) -> dict[str, int]:
    """The scrypt costs of an `encryption` section, if davit could have written them."""
    cost = {k: section.get(k) for k in ("n", "r", "p")}
    n, r, p = cost["n"], cost["r"], cost["p"]
    if not (type(n) is int and type(r) is int and type(p) is int and n > 1 and r > 0 and p > 0):
        raise RepositoryKeyError(f"{where}: the encryption section of its config.json is damaged (scrypt costs)")
    if 128 * n * r > _MAX_SCRYPT_BYTES or p > _MAX_SCRYPT_P:
        raise RepositoryKeyError(
            f"{where}: its config.json asks for scrypt costs davit never writes (n={n}, r={r}, p={p}: more than "
            f"{_MAX_SCRYPT_BYTES >> 20} MiB or p > {_MAX_SCRYPT_P}); refused rather than exhaust this host"
        )
    return {"n": n, "r": r, "p": p}


def _stretch(passphrase: str, salt: bytes, cost: dict[str, int]) -> bytes:
    if not passphrase:
        raise RepositoryKeyError("the repository passphrase is empty")
    return Scrypt(salt=salt, length=32, n=cost["n"], r=cost["r"], p=cost["p"]).derive(passphrase.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value whatever the key order or spacing it was read with."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def plain_chunk_id(plain: bytes | memoryview) -> bytes:
    return hashlib.sha256(plain).digest()

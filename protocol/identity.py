"""Ed25519 identities: who signs envelopes and learnware artefacts.

The key id is derived from the public key (first 16 bytes of its SHA-256, hex) so it needs no
registry. Private keys are saved as PKCS#8 PEM, created with 0600 permissions, optionally
encrypted with a passphrase.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)

from .errors import IdentityError, SignatureError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, *, field: str, size: int | None = None) -> bytes:
    """Strict base64: canonical text only (so no two strings name the same bytes)."""
    if not isinstance(text, str):
        raise SignatureError(f"{field} must be base64 text", field=field)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise SignatureError(f"{field} is not valid base64", field=field) from exc
    if b64(raw) != text:
        raise SignatureError(f"{field} is not canonical base64", field=field)
    if size is not None and len(raw) != size:
        raise SignatureError(f"{field} must be {size} bytes, got {len(raw)}", field=field)
    return raw


def key_id_of(public_key_b64: str) -> str:
    """Stable short name of a public key."""
    raw = unb64(public_key_b64, field="public_key", size=PUBLIC_KEY_BYTES)
    return hashlib.sha256(raw).hexdigest()[:32]


class PublicKey:
    """A verifier for one Ed25519 public key (cached by the envelope code)."""

    __slots__ = ("b64", "key_id", "_key")

    def __init__(self, public_key_b64: str):
        raw = unb64(public_key_b64, field="sender", size=PUBLIC_KEY_BYTES)
        try:
            self._key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise SignatureError("sender is not a valid Ed25519 public key", field="sender") from exc
        self.b64 = public_key_b64
        self.key_id = hashlib.sha256(raw).hexdigest()[:32]

    def verify(self, signature: bytes, data: bytes) -> None:
        try:
            self._key.verify(signature, data)
        except InvalidSignature as exc:
            raise SignatureError("signature does not verify") from exc


class Identity:
    """An Ed25519 key pair. ``Identity.generate()``, ``save(path)``, ``Identity.load(path)``."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._private = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
        self.public_key_b64 = b64(raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:32]

    @classmethod
    def generate(cls) -> "Identity":
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.public_key_b64)

    def save(self, path: str | os.PathLike, passphrase: str | bytes | None = None,
             *, overwrite: bool = False) -> Path:
        """Write the private key as PEM with 0600 permissions (created so, never widened)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
               else serialization.NoEncryption())
        pem = self._private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8, enc)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise IdentityError(f"{path} already exists; refusing to overwrite a key") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(path, 0o600)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, passphrase: str | bytes | None = None) -> "Identity":
        path = Path(path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read identity file {path}: {exc.strerror}") from exc
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        try:
            key = serialization.load_pem_private_key(data, password=passphrase or None)
        except TypeError as exc:
            raise IdentityError(f"{path} is encrypted: a passphrase is needed" if not passphrase
                                else f"{path} is not encrypted: give no passphrase") from exc
        except ValueError as exc:
            raise IdentityError(f"{path} is not a readable Ed25519 key (or wrong passphrase)") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def __repr__(self) -> str:
        return f"Identity(key_id={self.key_id!r})"

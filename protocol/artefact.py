"""Artefact signatures: a developer vouches for (semantic, spec, model file) as one unit.

The market stores and serves the signature untouched, so anyone who downloads a learnware can check
that it came from that developer and that the market did not swap any part of it.
"""
from __future__ import annotations

import hashlib
from typing import Any

from .encoding import canonical_bytes
from .errors import SignatureError
from .identity import SIGNATURE_BYTES, Identity, PublicKey, b64, unb64

ARTEFACT_DOMAIN = "learnware-market/artefact/v1"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(obj: Any) -> str:
    """SHA-256 of the canonical encoding of a JSON-able object."""
    return sha256_hex(canonical_bytes(obj))


def _statement(semantic_sha256: str, spec_sha256: str, model_sha256: str) -> bytes:
    return canonical_bytes({"domain": ARTEFACT_DOMAIN, "semantic_sha256": semantic_sha256,
                            "spec_sha256": spec_sha256, "model_sha256": model_sha256})


def sign_artefact(identity: Identity, semantic: dict, spec: dict, model_sha256: str) -> dict:
    hashes = {"semantic_sha256": content_hash(semantic), "spec_sha256": content_hash(spec),
              "model_sha256": model_sha256}
    sig = identity.sign(_statement(**hashes))
    return {**hashes, "signature": b64(sig)}


def verify_artefact(developer_public_key_b64: str, artefact: dict, *, semantic: dict, spec: dict,
                    model_sha256: str) -> None:
    """Raise :class:`SignatureError` unless ``artefact`` binds exactly these three parts."""
    if artefact.get("semantic_sha256") != content_hash(semantic):
        raise SignatureError("semantic specification does not match the developer's signature",
                             field="artefact.semantic_sha256", code="artefact_mismatch")
    if artefact.get("spec_sha256") != content_hash(spec):
        raise SignatureError("RKME specification does not match the developer's signature",
                             field="artefact.spec_sha256", code="artefact_mismatch")
    if artefact.get("model_sha256") != model_sha256:
        raise SignatureError("model file does not match the developer's signature",
                             field="artefact.model_sha256", code="artefact_mismatch")
    sig = unb64(artefact.get("signature", ""), field="artefact.signature", size=SIGNATURE_BYTES)
    try:
        PublicKey(developer_public_key_b64).verify(
            sig, _statement(artefact["semantic_sha256"], artefact["spec_sha256"], model_sha256))
    except SignatureError as exc:
        raise SignatureError("the developer's artefact signature does not verify",
                             field="artefact.signature", code="bad_artefact_signature") from exc

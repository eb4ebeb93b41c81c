"""Market key rotations: the old key hands the market over to a new key, in a statement both sign.

A rotation is ``{old, new, at, old_signature, new_signature}``: Ed25519 signatures of the old
and the new key over a domain tag, both public keys and the time (Unix seconds), in canonical
JSON. The old key's signature is what a client pinned to the old key trusts; the new key's shows
that whoever rotated holds the new private key (nobody can hand a market over to a key they
merely saw). A client follows the chain of rotations from the key it pinned
(:func:`follow_rotations`) and pins the key at its end. A rotation is only as safe as the old
key: after a *theft* of the key, clients must be told out of band (docs/DEPLOY.md).
"""
from __future__ import annotations

import time

from .encoding import canonical_bytes
from .errors import LearnwareError
from .identity import SIGNATURE_BYTES, Identity, PublicKey, b64, unb64
from .limits import MAX_ROTATIONS

ROTATION_DOMAIN = "learnware-market/key-rotation/v1"


class RotationError(LearnwareError):
    code = "bad_rotation"
    status = 400


def _statement(old: str, new: str, at: int) -> bytes:
    return canonical_bytes({"domain": ROTATION_DOMAIN, "old": old, "new": new, "at": int(at)})


def sign_rotation(old: Identity, new: Identity, *, now: float | None = None) -> dict:
    """The statement that the market signing with ``old`` now signs with ``new``."""
    if old.public_key_b64 == new.public_key_b64:
        raise RotationError("the new market key is the current one", field="new")
    at = int(time.time() if now is None else now)
    msg = _statement(old.public_key_b64, new.public_key_b64, at)
    return {"old": old.public_key_b64, "new": new.public_key_b64, "at": at,
            "old_signature": b64(old.sign(msg)), "new_signature": b64(new.sign(msg))}


def verify_rotation(rotation: dict, *, old: str) -> str:
    """The new key of ``rotation`` when it is a valid hand-over from ``old``; else
    :class:`RotationError`."""
    if not isinstance(rotation, dict) or rotation.get("old") != old:
        raise RotationError("the rotation does not start from this key", field="old")
    try:
        msg = _statement(old, rotation["new"], rotation["at"])
        for who in ("old", "new"):
            sig = unb64(rotation[f"{who}_signature"], field=f"{who}_signature",
                        size=SIGNATURE_BYTES)
            PublicKey(rotation[who]).verify(sig, msg)
    except (KeyError, TypeError) as exc:
        raise RotationError(f"the rotation lacks {exc}", field="rotation") from exc
    except LearnwareError as exc:  # a malformed key or signature, or one that does not verify
        raise RotationError(f"the rotation does not verify: {exc.message}",
                            field=exc.field or "rotation") from exc
    return rotation["new"]


def follow_rotations(rotations: list[dict], pinned: str) -> str:
    """The key that ``pinned`` was handed over to through ``rotations`` (in order; those that do
    not continue the chain are skipped), or ``pinned`` itself when none applies. A rotation that
    continues the chain but does not verify raises :class:`RotationError`."""
    key = pinned
    for rotation in rotations[:MAX_ROTATIONS]:
        if isinstance(rotation, dict) and rotation.get("old") == key:
            key = verify_rotation(rotation, old=key)
    return key

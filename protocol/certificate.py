"""Publisher certificates: the market operator vouches that one developer key may publish.

A certificate is ``{developer, operator, expires, signature}``: the operator's Ed25519
signature over a domain tag, the developer's public key, the operator's public key and the
expiry (Unix seconds), in canonical JSON. The developer puts it in the publish body
(``certificate``), which the envelope signs; a market run with ``--publishers certified
--operator-key KEY`` accepts a publish only with a certificate for the envelope's sender,
signed by KEY and not expired. ``lwm certify`` issues them.
"""
from __future__ import annotations

import time

from .encoding import canonical_bytes
from .errors import LearnwareError, SignatureError
from .identity import SIGNATURE_BYTES, Identity, PublicKey, b64, unb64

CERTIFICATE_DOMAIN = "learnware-market/publisher-certificate/v1"
MAX_VALID_DAYS = 3660


class CertificateError(LearnwareError):
    code = "bad_certificate"
    status = 403


def _statement(developer: str, operator: str, expires: int) -> bytes:
    return canonical_bytes({"domain": CERTIFICATE_DOMAIN, "developer": developer,
                            "operator": operator, "expires": int(expires)})


def issue_certificate(operator: Identity, developer_public_key_b64: str, *,
                      valid_days: float = 365.0, now: float | None = None) -> dict:
    """The operator's certificate for one developer key."""
    PublicKey(developer_public_key_b64)  # refuses anything that is not an Ed25519 key
    if not 0 < valid_days <= MAX_VALID_DAYS:
        raise CertificateError(f"valid_days must be in (0, {MAX_VALID_DAYS}]",
                               field="valid_days", status=400)
    expires = int((time.time() if now is None else now) + valid_days * 86400)
    op = operator.public_key_b64
    return {"developer": developer_public_key_b64, "operator": op, "expires": expires,
            "signature": b64(operator.sign(_statement(developer_public_key_b64, op, expires)))}


def verify_certificate(cert: dict, *, operator_key: str, developer: str,
                       now: float | None = None) -> None:
    """Raise :class:`CertificateError` unless ``cert`` lets ``developer`` publish under the
    operator key ``operator_key`` now."""
    where = "certificate"
    if cert.get("developer") != developer:
        raise CertificateError("the certificate was issued for another developer key than the "
                               "one that signed this request", field=f"{where}.developer")
    if cert.get("operator") != operator_key:
        raise CertificateError("the certificate is not signed by this market's operator key",
                               field=f"{where}.operator")
    if cert["expires"] <= (time.time() if now is None else now):
        raise CertificateError("the certificate has expired; ask the market operator for a "
                               "new one (lwm certify)", field=f"{where}.expires")
    try:
        sig = unb64(cert.get("signature", ""), field=f"{where}.signature", size=SIGNATURE_BYTES)
        PublicKey(operator_key).verify(sig, _statement(developer, operator_key, cert["expires"]))
    except SignatureError as exc:
        raise CertificateError("the certificate's signature does not verify under the "
                               "operator key", field=f"{where}.signature") from exc

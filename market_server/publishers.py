"""Who may publish: the operator's policy (``--publishers open|allow:FILE|certified``).

Keys are free, so an open market lets anyone publish. An institution can instead list the
developer keys it admits (``allow:FILE``: public keys or key ids, one a line, ``#`` comments;
the file is re-read when it changes, so admitting a key needs no restart), or admit every key
holding a certificate signed by the operator key (``certified``: see protocol/certificate.py,
issued with ``lwm certify``). Deleting one's own learnwares stays allowed under every policy.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from protocol.certificate import CertificateError, verify_certificate
from protocol.errors import LearnwareError
from protocol.identity import PublicKey

MAX_ALLOW_FILE_BYTES = 16 * 1024 * 1024


class PublisherRefused(LearnwareError):
    code = "publisher_not_allowed"
    status = 403


class PublishPolicy:
    def __init__(self, spec: str, operator_key: str | None = None):
        spec = (spec or "open").strip()
        self.kind, _, arg = spec.partition(":")
        self.operator_key = operator_key
        self._lock = threading.Lock()
        self._allowed: frozenset[str] = frozenset()
        self._stamp: tuple | None = None
        if self.kind == "allow" and arg:
            self.path = Path(arg)
            self._reload()
        elif self.kind == "certified" and not arg:
            if not operator_key:
                raise LearnwareError("--publishers certified needs --operator-key (the "
                                     "operator's base64 Ed25519 public key)",
                                     code="bad_config", field="operator_key")
            PublicKey(operator_key)
        elif not (self.kind == "open" and not arg):
            raise LearnwareError(f"publishers must be open, allow:FILE or certified, got "
                                 f"{spec[:100]!r}", code="bad_config", field="publishers")

    def _reload(self) -> frozenset[str]:
        """The allow-list, re-read when the file's size or modification time changed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise LearnwareError(f"cannot read the publishers allow-list {self.path}: "
                                 f"{exc.strerror}", code="bad_config", status=503,
                                 field="publishers") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                if st.st_size > MAX_ALLOW_FILE_BYTES:
                    raise LearnwareError("the publishers allow-list is larger than 16 MiB",
                                         code="bad_config", status=503, field="publishers")
                lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
                self._allowed = frozenset(line.split("#", 1)[0].strip() for line in lines
                                          if line.split("#", 1)[0].strip())
                self._stamp = stamp
            return self._allowed

    def check(self, envelope) -> None:
        """Raise :class:`PublisherRefused` (403) unless the envelope's sender may publish."""
        if self.kind == "open":
            return
        if self.kind == "allow":
            allowed = self._reload()
            if envelope.sender in allowed or envelope.sender_key_id in allowed:
                return
            raise PublisherRefused(
                f"this market admits publishers from an allow-list, and key "
                f"{envelope.sender_key_id} is not on it; send your public key to the market's "
                f"operator to be added", field="sender")
        cert = envelope.body.get("certificate")
        if cert is None:
            raise PublisherRefused(
                "this market admits publishers certified by its operator, and this publish "
                "carries no certificate; ask the operator for one (lwm certify) and publish "
                "with it (MarketClient(..., certificate=...) or lwm publish --certificate)",
                field="certificate")
        try:
            verify_certificate(cert, operator_key=self.operator_key, developer=envelope.sender)
        except CertificateError as exc:
            raise PublisherRefused(f"this market admits publishers certified by its operator: "
                                   f"{exc.message}", field=exc.field) from exc

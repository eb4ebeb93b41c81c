"""The privacy audit of ``tests/test_privacy_audit.py``, run on what the workbench really sent.

Every recorded request (URL, headers, body) is expanded into everything decodable inside it
(JSON -> base64 -> zip members -> JSON ...), then searched for every raw value of the user's
tables: as float64 and float32 (little- and big-endian, any alignment) and as decimal text.

One difference from the test, whose data are made distinctive on purpose: a real table holds
short values (0, 1, 0.5, 2005) that occur in any message by chance (a count, a flag, an
integer-valued float's zero bytes, a metric rounded to 3 digits). Only *distinctive* forms --
at least ``MIN_DIGITS`` significant digits -- are looked for: values with fewer are counted and
reported as not checkable, never silently passed, and a distinctive value's short forms (its
float32 or its text to 4 decimals, when they have fewer digits) are left out.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import unquote_to_bytes

import numpy as np

__all__ = ["Haystack", "Needles", "AuditReport", "request_haystacks", "scan", "audit",
           "distinctive_values", "MIN_DIGITS", "MAX_VALUES"]

CRYPTO_KEYS = {"sig", "signature", "sender"}  # Ed25519 signatures and public keys
B64_RE = re.compile(r"^[A-Za-z0-9+/_-]{8,}={0,2}$")
NUM_RE = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
#: significant digits a value needs to be looked for (fewer: it occurs by chance)
MIN_DIGITS = 5
#: most distinct values looked for (a larger table is audited on a seeded sample, and says so)
MAX_VALUES = 20_000


@dataclass
class Haystack:
    where: str
    data: bytes
    crypto: bool = False  # signature/key bytes: random, scanned for float64 only


@dataclass
class Needles:
    binary64: dict[bytes, float] = field(default_factory=dict)
    binary32: dict[bytes, float] = field(default_factory=dict)
    text: dict[bytes, float] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Iterable[float]) -> "Needles":
        n = cls()
        for v in values:
            n.add(float(v))
        return n

    def add(self, v: float) -> None:
        """The value's forms, each only when it is itself distinctive (``0.50000001`` is
        distinctive as float64, but as float32 it is 0.5)."""
        for fmt in ("<d", ">d"):
            self.binary64[struct.pack(fmt, v)] = v
        if _digits(str(np.float32(v))) >= MIN_DIGITS:
            for fmt in ("<f", ">f"):
                self.binary32[struct.pack(fmt, v)] = v
        for a in (v, abs(v)):
            for txt in (repr(a), str(np.float32(a)), f"{a:.6f}", f"{a:.5f}", f"{a:.4f}",
                        f"{a:.3f}", f"{a:.8g}", f"{a:.10g}"):
                if _digits(txt) >= MIN_DIGITS:
                    self.text[txt.encode()] = v


def _digits(text: str) -> int:
    """Significant digits of a decimal text."""
    return len(text.lower().lstrip("-").split("e")[0].replace(".", "").lstrip("0").rstrip("0"))


def _significant_digits(v: float) -> int:
    return _digits(repr(abs(v)))


def distinctive_values(values: np.ndarray, *, max_values: int = MAX_VALUES,
                       seed: int = 0) -> tuple[np.ndarray, int, int]:
    """(the distinct values looked for, how many distinct values there are, how many of them
    are too short to be looked for). More than ``max_values``: a seeded sample of them."""
    vals = np.unique(np.asarray(values, dtype=np.float64).ravel())
    vals = vals[np.isfinite(vals)]
    keep = np.array([_significant_digits(float(v)) >= MIN_DIGITS for v in vals], dtype=bool)
    looked = vals[keep]
    if len(looked) > max_values:
        looked = np.sort(np.random.default_rng(seed).choice(looked, max_values, replace=False))
    return looked, len(vals), int((~keep).sum())


def _b64_candidates(s: str) -> list[bytes]:
    if len(s) < 8 or not B64_RE.match(s):
        return []
    out = []
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            out.append(decoder(s + "=" * (-len(s) % 4)))
        except (binascii.Error, ValueError):
            pass
    return out


def expand(where: str, data: bytes, depth: int = 0, crypto: bool = False) -> list[Haystack]:
    """``data`` itself plus everything decodable inside it (JSON -> base64 -> zip -> ...)."""
    out = [Haystack(where, data, crypto)]
    if depth > 4 or not data:
        return out
    if data.startswith(b"PK\x03\x04"):
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            for info in zf.infolist():
                out += expand(f"{where}!{info.filename}", zf.read(info), depth + 1)
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
        return out
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return out

    def walk(node, path, in_crypto=False):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(k, f"{path}.<key>", in_crypto)
                walk(v, f"{path}.{k}", in_crypto or k in CRYPTO_KEYS)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]", in_crypto)
        elif isinstance(node, str):
            for raw in _b64_candidates(node):
                out.extend(expand(f"{where}{path}<b64>", raw, depth + 1, in_crypto))
    walk(obj, "")
    return out


def request_haystacks(method: str, url: str, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> list[Haystack]:
    tag = f"{method} {url}"
    hay = [Haystack(f"{tag} url", url.encode()),
           Haystack(f"{tag} url (unquoted)", unquote_to_bytes(url))]
    for k, v in headers:
        hay.append(Haystack(f"{tag} header {k.decode('latin-1')}", k + b": " + v))
    for part in re.split(r"[?&=/]", unquote_to_bytes(url).decode("latin-1")):
        for raw in _b64_candidates(part):
            hay += expand(f"{tag} url<b64>", raw, 1)
    hay += expand(f"{tag} body", body)
    return hay


class _Table:
    """Patterns of one width as sorted unsigned integers, for vectorised lookup."""

    def __init__(self, patterns: dict[bytes, float], width: int):
        self.width, self.dtype = width, np.dtype(f"<u{width}")
        keys = np.frombuffer(b"".join(patterns), dtype=self.dtype)
        order = np.argsort(keys)
        self.keys = keys[order]
        values = list(patterns.values())
        self.values = [values[i] for i in order]

    def hits(self, data: bytes) -> list[tuple[int, float]]:
        w, hits = self.width, []
        if len(self.keys) == 0:
            return hits
        for off in range(w):
            n = (len(data) - off) // w
            if n <= 0:
                continue
            words = np.frombuffer(data, dtype=self.dtype, count=n, offset=off)
            pos = np.minimum(np.searchsorted(self.keys, words), len(self.keys) - 1)
            for i in np.flatnonzero(self.keys[pos] == words):
                hits.append((off + w * int(i), self.values[int(pos[i])]))
        return hits


@dataclass
class Finding:
    value: float
    how: str
    where: str


def scan(haystacks: list[Haystack], needles: Needles) -> list[Finding]:
    """Every place a needle occurs."""
    found = []
    t64, t32 = _Table(needles.binary64, 8), _Table(needles.binary32, 4)
    for h in haystacks:
        for i, v in t64.hits(h.data):
            found.append(Finding(v, "float64", f"{h.where} at {i}"))
        if not h.crypto:
            for i, v in t32.hits(h.data):
                found.append(Finding(v, "float32", f"{h.where} at {i}"))
        for tok in set(NUM_RE.findall(h.data)):
            for t in (tok, tok.lstrip(b"-")):
                v = needles.text.get(t)
                if v is not None:
                    found.append(Finding(v, f"text {t.decode()!r}", h.where))
    return found


@dataclass
class AuditReport:
    """``found`` of ``checked`` distinct raw values occur in ``n_requests`` requests."""

    n_requests: int
    n_values: int       # distinct finite values in the tables
    checked: int        # looked for (distinctive, maybe sampled)
    too_short: int      # not looked for: too few significant digits
    sampled: bool
    findings: list[Finding]

    @property
    def found(self) -> int:
        return len({f.value for f in self.findings})

    @property
    def clean(self) -> bool:
        return not self.findings


def audit(requests: Iterable[tuple[str, str, list, bytes]], values: np.ndarray) -> AuditReport:
    """Audit ``(method, url, headers, body)`` requests against the raw ``values``."""
    requests = list(requests)
    looked, n_values, too_short = distinctive_values(values)
    needles = Needles.of(looked)
    hay = [h for r in requests for h in request_haystacks(*r)]
    findings = scan(hay, needles) if len(looked) else []
    sampled = len(looked) < n_values - too_short
    return AuditReport(len(requests), n_values, len(looked), too_short, sampled, findings)

"""Signed envelopes: every mutating (and search) request, and every market response.

An envelope is ``{v, type, sender, ts, nonce, body, sig}``, plus ``aud`` on requests (the key id
of the market the request is for, so a request sent to one market cannot be replayed to another)
and ``reply_to`` on responses (the nonce of the request answered, so an old response cannot be
replayed as the answer to a new request; a GET sends a nonce in a header, and its answer's
``reply_to`` is :func:`get_reply_to` of that nonce and the resource asked).
``sig`` is Ed25519 over a domain tag plus the canonical bytes of everything else, and
:func:`seal` sends exactly those bytes. The receiver verifies the signature over the bytes as
received (minus the ``sig`` member), without re-encoding: any change to any bit is refused.

Only the canonical form is accepted. Every member but ``body`` is compared byte for byte with its
canonical encoding (key order, no whitespace, no escapes, ``sig`` right before ``ts``), which
costs a few microseconds. The body's bytes are covered by the signature as sent and are not
re-encoded on every open (that costs a quarter of the opening time of a publish envelope): a
sender that signs a non-canonical body vouched for those very bytes, and hashes that must agree
across parties (artefact hashes, island keys) are always computed from the canonical encoding of
the parsed values.

:func:`open_envelope` checks, in order: well-formed, known version and type, canonical frame,
audience (requests), body valid against the type's schema, signature, timestamp within the
window, nonce not seen within the window.

Requests name their market in ``aud`` within protocol version 1: market and SDK ship together and
no deployed client predates it, and a request without ``aud`` is refused with a clear
``missing_audience`` error rather than the vaguer ``unsupported_version``.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Protocol

import msgspec

from .encoding import DEFAULT_MAX_BYTES, canonical_bytes, decode
from .errors import (AudienceError, EncodingError, ProtocolError, ReplayError,
                     SignatureError, StaleMessageError, UnknownMessageError)
from .identity import SIGNATURE_BYTES, Identity, PublicKey, b64, unb64
from .schemas import MESSAGE_TYPES, validate_body
from .structs import BODY_TYPES

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DEFAULT_WINDOW_S = 300.0
SIGNING_DOMAIN = b"learnware-market/envelope/v1\n"
GET_DOMAIN = b"learnware-market/get/v1\n"
_FIELDS = {"v", "type", "sender", "ts", "nonce", "body", "sig"}
_OPTIONAL = {"reply_to", "aud"}
# Messages a client sends to a market: each names its market in ``aud``; answers never do.
REQUEST_TYPES = frozenset({"publish", "delete", "search", "anchor_request", "metrics_report",
                           "world_search", "usage_report"})


class NonceStore(Protocol):
    """Remembers (sender, nonce) pairs for at least the timestamp window."""

    def check_and_store(self, key_id: str, nonce: str, ts_ms: int, window_s: float) -> bool:
        """True when the nonce is new (and is now stored); False when seen before."""


class MemoryNonceStore:
    """In-process nonce store (tests, the client, a single worker)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def check_and_store(self, key_id: str, nonce: str, ts_ms: int, window_s: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._seen) > 10_000:
                horizon = now - 2 * window_s
                self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
            if (key_id, nonce) in self._seen:
                return False
            self._seen[(key_id, nonce)] = now
            return True


@dataclass(frozen=True)
class Envelope:
    version: int
    type: str
    sender: str
    sender_key_id: str
    ts_ms: int
    nonce: str
    body: Any
    reply_to: str | None
    raw: bytes
    audience: str | None = None


_key_cache: dict[str, PublicKey] = {}


def _public_key(sender_b64: str) -> PublicKey:
    key = _key_cache.get(sender_b64)
    if key is None:
        key = PublicKey(sender_b64)
        if len(_key_cache) > 4096:
            _key_cache.clear()
        _key_cache[sender_b64] = key
    return key


def new_nonce() -> str:
    return os.urandom(16).hex()


def _missing_audience() -> ProtocolError:
    return EncodingError("a request envelope must name the market it is for: aud = the market's "
                         "key id (GET /v1/market); update the client", field="aud",
                         code="missing_audience")


def get_reply_to(nonce: str, path: str, query: bytes) -> str:
    """The ``reply_to`` of the answer to a GET: the client's fresh nonce bound to the resource
    asked (the decoded path below the API root and the raw query string), so neither an old
    answer nor an answer about another resource (a request rewritten on the way, keeping the
    nonce) passes as the answer to this request."""
    return hashlib.sha256(GET_DOMAIN + nonce.encode() + b"\n" + path.encode("utf-8", "replace")
                          + b"?" + bytes(query)).hexdigest()[:32]


def seal(identity: Identity, message_type: str, body: Any, *, audience: str | None = None,
         reply_to: str | None = None, now: float | None = None, nonce: str | None = None,
         validate: bool = True) -> bytes:
    """Sign ``body`` as a ``message_type`` envelope and return its canonical bytes.

    ``audience`` (the key id of the market addressed) is required for requests and refused for
    answers, so a request is bound to one market."""
    if message_type not in MESSAGE_TYPES:
        raise UnknownMessageError(f"unknown message type {message_type!r}", field="type")
    if (audience is None) == (message_type in REQUEST_TYPES):
        if audience is None:
            raise _missing_audience()
        raise EncodingError(f"a {message_type} answer names no audience (it is bound by "
                            "reply_to)", field="aud")
    if validate:
        validate_body(message_type, body)
    env = {"v": PROTOCOL_VERSION, "type": message_type, "sender": identity.public_key_b64,
           "ts": int(round((time.time() if now is None else now) * 1000)),
           "nonce": nonce or new_nonce(), "body": body}
    if audience is not None:
        env["aud"] = audience
    if reply_to is not None:
        env["reply_to"] = reply_to
    unsigned = canonical_bytes(env)
    sig = b64(identity.sign(SIGNING_DOMAIN + unsigned))
    # The canonical form with ``sig``: its member goes right before the top-level ``ts`` (keys
    # sorted; ``ts`` follows the body, so the last ``,"ts":`` is the top-level one). One
    # encoding instead of two; open_envelope cuts the same member out to verify.
    cut = unsigned.rfind(b',"ts":')
    return unsigned[:cut] + b',"sig":"' + sig.encode("ascii") + b'"' + unsigned[cut:]


def _hex32(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 32 and all(c in "0123456789abcdef" for c in v)


def _check_shape(env: Any) -> None:
    if not isinstance(env, dict):
        raise EncodingError("envelope must be an object")
    keys = set(env)
    missing = _FIELDS - keys
    if missing:
        f = sorted(missing)[0]
        raise EncodingError(f"envelope field {f} is missing", field=f)
    extra = keys - _FIELDS - _OPTIONAL
    if extra:
        f = sorted(extra)[0]
        raise EncodingError(f"envelope field {f} is not known", field=f)
    if not isinstance(env["v"], int) or isinstance(env["v"], bool):
        raise EncodingError("v must be an integer", field="v")
    if not isinstance(env["type"], str):
        raise EncodingError("type must be a string", field="type")
    if not isinstance(env["sender"], str) or len(env["sender"]) != 44:
        raise EncodingError("sender must be a base64 Ed25519 public key", field="sender")
    if not isinstance(env["ts"], int) or isinstance(env["ts"], bool) or env["ts"] < 0:
        raise EncodingError("ts must be a non-negative integer (milliseconds)", field="ts")
    for f in ("nonce", "reply_to"):
        if f in env and not _hex32(env[f]):
            raise EncodingError(f"{f} must be 32 lowercase hex characters", field=f)
    if "aud" in env and not _hex32(env["aud"]):
        raise EncodingError("aud must be a market key id (32 lowercase hex characters)",
                            field="aud")
    if not isinstance(env["sig"], str) or len(env["sig"]) != 88:
        raise EncodingError("sig must be a base64 Ed25519 signature", field="sig")


_Hex32 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}\\Z")]


class _Frame(msgspec.Struct, forbid_unknown_fields=True):
    """The envelope as :func:`_check_shape` accepts it, the body left as its raw bytes."""
    v: int
    type: str
    sender: Annotated[str, msgspec.Meta(min_length=44, max_length=44)]
    ts: Annotated[int, msgspec.Meta(ge=0)]
    nonce: _Hex32
    body: msgspec.Raw
    sig: Annotated[str, msgspec.Meta(min_length=88, max_length=88)]
    aud: _Hex32 | msgspec.UnsetType = msgspec.UNSET
    reply_to: _Hex32 | msgspec.UnsetType = msgspec.UNSET


_FRAME = msgspec.json.Decoder(_Frame)
_BODY_DECODERS = {t: msgspec.json.Decoder(bt) for t, bt in BODY_TYPES.items()}
_ANY = msgspec.json.Decoder()
_SORTED = msgspec.json.Encoder(order="sorted")


def _decode_fast(data: Any, max_bytes: int) -> dict | None:
    """The envelope :func:`decode` + :func:`_check_shape` would return, its frame canonical and
    its body valid for its type, all checked in C (msgspec, :mod:`protocol.structs`); ``None``
    when anything is off or merely unusual (a body not in canonical form, which could hide a
    duplicate key; a float msgspec prints otherwise than ``json``), and the checked path then
    opens the envelope and names exactly what is wrong. Accepts nothing the checked path
    refuses: the frame is compared byte for byte, the body is re-encoded to its own bytes."""
    if not isinstance(data, bytes) or len(data) > max_bytes:
        return None
    try:
        f = _FRAME.decode(data)
        body_decoder = _BODY_DECODERS.get(f.type)
        if body_decoder is None:
            return None
        env = {"v": f.v, "type": f.type, "sender": f.sender, "ts": f.ts, "nonce": f.nonce,
               "sig": f.sig}
        if f.aud is not msgspec.UNSET:
            env["aud"] = f.aud
        if f.reply_to is not msgspec.UNSET:
            env["reply_to"] = f.reply_to
        _signed_bytes(data, env)
        raw = bytes(f.body)
        # The typed body, re-encoded, is its own bytes: the text is canonical (so no key is
        # repeated), base64 included (msgspec decodes "QR==" as "QQ==" would).
        if _SORTED.encode(body_decoder.decode(raw)) != raw:
            return None
        body = _ANY.decode(raw)
    except Exception:  # noqa: BLE001 - any refusal: the checked path gives the exact error
        return None
    env["body"] = body
    return env


def _signed_bytes(data: bytes, env: dict) -> bytes:
    """The bytes the signature covers, after checking that every member but ``body`` is exactly
    where and how the canonical encoding puts it (every such member is a short scalar of a fixed
    form, so this is a comparison of a few dozen bytes)."""
    aud = env.get("aud")
    head = b'{"body":' if aud is None else b'{"aud":"' + aud.encode() + b'","body":'
    reply_to = env.get("reply_to")
    before_sig = (b',"nonce":"' + env["nonce"].encode()
                  + (b'"' if reply_to is None else b'","reply_to":"' + reply_to.encode() + b'"')
                  + b',"sender":"' + env["sender"].encode("utf-8", "replace") + b'"')
    after_sig = (b',"ts":' + str(env["ts"]).encode() + b',"type":"' + env["type"].encode()
                 + b'","v":' + str(env["v"]).encode() + b"}")
    member = b',"sig":"' + env["sig"].encode("utf-8", "replace") + b'"'
    tail = before_sig + member + after_sig
    if len(data) <= len(head) + len(tail) or not (data.startswith(head) and data.endswith(tail)):
        raise EncodingError("message is not in canonical form (sorted keys, compact, UTF-8, "
                            "sig right before ts)", field="sig", code="not_canonical")
    return data[:len(data) - len(member) - len(after_sig)] + after_sig


def open_envelope(data: bytes, *, nonce_store: NonceStore | None, window_s: float = DEFAULT_WINDOW_S,
                  max_bytes: int = DEFAULT_MAX_BYTES, expected_types: Iterable[str] | None = None,
                  expected_sender: str | None = None, audience: str | None = None,
                  now: float | None = None) -> Envelope:
    """Verify ``data`` and return the envelope; every failure is a :class:`ProtocolError`.

    ``nonce_store=None`` skips the replay check (responses, which are bound by ``reply_to``).
    ``expected_sender`` pins the signer's public key (the client pins the market's key).
    ``audience``: the key id of the market opening a request; a request addressed to another
    market is refused. A request without ``aud`` is refused whatever ``audience`` is.
    """
    env = _decode_fast(data, max_bytes)
    body_checked = env is not None
    if env is None:
        env = decode(data, max_bytes=max_bytes)
        _check_shape(env)
    data = bytes(data)
    if env["v"] not in SUPPORTED_VERSIONS:
        raise ProtocolError(f"protocol version {env['v']} is not supported "
                            f"(supported: {list(SUPPORTED_VERSIONS)})", field="v",
                            code="unsupported_version")
    mtype = env["type"]
    if mtype not in MESSAGE_TYPES:
        raise UnknownMessageError(f"unknown message type {mtype[:60]!r}", field="type")
    if expected_types is not None and mtype not in expected_types:
        raise UnknownMessageError(f"expected a message of type {sorted(expected_types)}, "
                                  f"got {mtype!r}", field="type", code="unexpected_message_type")
    signed = _signed_bytes(data, env)
    aud = env.get("aud")
    if mtype in REQUEST_TYPES:
        if aud is None:
            raise _missing_audience()
        if audience is not None and aud != audience:
            raise AudienceError(f"this envelope is addressed to market {aud}, this is market "
                                f"{audience}", field="aud")
    elif aud is not None:
        raise EncodingError(f"a {mtype} answer names no audience", field="aud")
    if not body_checked:
        validate_body(mtype, env["body"])
    sig = unb64(env["sig"], field="sig", size=SIGNATURE_BYTES)
    key = _public_key(env["sender"])
    if expected_sender is not None and env["sender"] != expected_sender:
        raise SignatureError("message is signed by an unexpected key", field="sender",
                             code="unexpected_signer")
    # Verifying the wire bytes themselves means any change to any bit is refused, without
    # re-encoding the message.
    key.verify(sig, SIGNING_DOMAIN + signed)
    t = time.time() if now is None else now
    skew = env["ts"] / 1000.0 - t
    if abs(skew) > window_s:
        raise StaleMessageError(
            f"timestamp is {abs(skew):.0f} s in the {'future' if skew > 0 else 'past'}; "
            f"the window is +-{window_s:.0f} s (check the clock)", field="ts")
    if nonce_store is not None and not nonce_store.check_and_store(key.key_id, env["nonce"],
                                                                   env["ts"], window_s):
        raise ReplayError("this envelope was already received (replayed nonce)", field="nonce")
    return Envelope(env["v"], mtype, env["sender"], key.key_id, env["ts"], env["nonce"],
                    env["body"], env.get("reply_to"), data, aud)
